"""Export of the prompt-to-mask model (:class:`rdevos.prompt.PromptNet`) to ONNX or TorchScript.

One graph, ``prompt``: the normalised crop ``image`` (1, 3, H, W) and the prompt maps ``prompts`` (1, 4, H, W) ->
the object probability ``prob`` (1, 1, H, W) float32 (sigmoid of the logits). The frame never reaches the graph:
the crop window, the warp into the crop, the prompt maps and the warp back are :mod:`rdevos.prompt.encoding`
(numpy and OpenCV), which the runners (:class:`~rdevos.export.runtime.OnnxPromptPredictor`,
:class:`~rdevos.export.torchscript.TorchScriptPromptPredictor`) share with :class:`rdevos.prompt.PromptPredictor`.
The graph is traced on a smaller, non-square crop with dynamic H and W, and the self-check runs it at the model's
crop size, so nothing of the traced size survives in it.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rdevos.errors import InputError
from rdevos.export.graphs import (CheckCase, GraphSpec, TensorSpec, check_export_args, graph_entries,
                                  prepare_out_dir)
from rdevos.export.runtime import FORMAT_VERSION, MANIFEST_NAME, PROMPT_FORMAT_NAME, validate_manifest
from rdevos.prompt import encoding
from rdevos.prompt.model import PromptNet

logger = logging.getLogger(__name__)

__all__ = ["export_prompt_model", "prompt_graph_spec", "PromptPart", "PROMPT_TRACE_SIZE"]

#: Crop (H, W) the prompt graph is traced on: not square, so never the model's (square) crop size, which the
#: self-check then runs at.
PROMPT_TRACE_SIZE = (96, 128)


class PromptPart(nn.Module):
    """image (1, 3, H, W) normalised crop, prompts (1, 4, H, W) -> prob (1, 1, H, W) float32."""

    def __init__(self, net: PromptNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image, prompts).float())


def prompt_graph_spec(net: PromptNet, precision: str = "fp32") -> GraphSpec:
    """Inputs and outputs of the ``prompt`` graph (crop and prompt maps in the precision's dtype)."""
    ft = "float16" if precision == "fp16" else "float32"
    pc = net.config.prompt_channels
    return GraphSpec((TensorSpec("image", (1, 3, "H", "W"), ft), TensorSpec("prompts", (1, pc, "H", "W"), ft)),
                     (TensorSpec("prob", (1, 1, "H", "W"), "float32"),))


def _inputs(net: PromptNet, size: tuple[int, int], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    """A random crop and prompt maps like real ones: a box channel, click disks, a soft previous mask."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    image = torch.randn(1, 3, h, w, generator=g)
    maps = torch.zeros(1, net.config.prompt_channels, h, w)
    maps[0, 0, h // 6:h - h // 5, w // 5:w - w // 6] = 1  # box
    maps[0, 1, h // 2 - 3:h // 2 + 3, w // 2 - 3:w // 2 + 3] = 1  # positive click
    maps[0, 2, h // 5:h // 5 + 5, w // 4:w // 4 + 5] = 1  # negative click
    if net.config.prompt_channels > 3:
        maps[0, 3] = torch.rand(h, w, generator=g)
    return image.to(dtype), maps.to(dtype)


def export_prompt_model(net: PromptNet, out_dir: str | Path, *, format: str = "onnx", precision: str = "fp32",
                        opset: int | None = None, verify: bool = True) -> Path:
    """Export a prompt-to-mask network as one graph plus ``manifest.json`` (and, for ONNX, the torch-free runtime).

    Args:
        net: the network (left unchanged; a CPU copy is exported).
        out_dir: the export folder (created; existing export files are replaced).
        format: ``"onnx"`` or ``"torchscript"``.
        precision: ``fp32`` or ``fp16`` (the probability is fp32 either way).
        opset: ONNX opset (ONNX only).
        verify: run the saved graph (onnxruntime: when installed) on the traced crop and at the model's crop size,
            against PyTorch; :class:`~rdevos.export.runtime.ExportCheckError` if it differs (no manifest then).
    Returns:
        The manifest path. Load it with :class:`~rdevos.export.runtime.OnnxPromptPredictor` or
        :class:`~rdevos.export.torchscript.TorchScriptPromptPredictor`.
    """
    if format not in ("onnx", "torchscript"):
        raise InputError(f"unknown export format {format!r}; choose one of onnx, torchscript")
    if format != "onnx" and opset is not None:
        raise InputError("--opset applies to ONNX exports only")
    prec, _ = check_export_args(precision, None)
    if format == "onnx":
        from rdevos.export.onnx import check_opset, require_onnx

        opset = check_opset(opset)
        require_onnx()
    out = prepare_out_dir(out_dir)
    copy_net = copy.deepcopy(net).cpu().eval()
    dtype = torch.float16 if prec == "fp16" else torch.float32
    part = PromptPart(copy_net.to(dtype)).eval()
    parts = {"prompt": part}
    specs = {"prompt": prompt_graph_spec(net, prec)}
    traced = {"prompt": _inputs(net, PROMPT_TRACE_SIZE, dtype, seed=0)}
    s = net.config.crop_size
    cases: list[CheckCase] = [
        (f"the traced {PROMPT_TRACE_SIZE[0]}x{PROMPT_TRACE_SIZE[1]} crop", traced),
        (f"the model's {s}x{s} crop (traced on {PROMPT_TRACE_SIZE[0]}x{PROMPT_TRACE_SIZE[1]})",
         {"prompt": _inputs(net, (s, s), dtype, seed=1)})]
    verification: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if format == "onnx":
        from rdevos.export.onnx import RUNTIME_FILE, check_onnx_graphs, ship_runtime, write_onnx_graphs

        files = write_onnx_graphs(parts, specs, traced, out, opset)  # type: ignore[arg-type]
        if verify:
            verification = check_onnx_graphs(parts, specs, cases, out, files, prec)
        ship_runtime(out, (encoding.__file__, encoding.SHIPPED_NAME))
        extra["runtime"] = RUNTIME_FILE
    else:
        from rdevos.export.torchscript import check_torchscript_graphs, write_torchscript_graphs

        files = write_torchscript_graphs(parts, traced, out)
        if verify:
            verification = check_torchscript_graphs(parts, specs, cases, out, files, prec)
    from rdevos import __version__

    manifest: dict[str, Any] = {
        "format": PROMPT_FORMAT_NAME, "version": FORMAT_VERSION, "backend": format, "rdevos_version": __version__,
        "torch_version": torch.__version__.split("+")[0], "precision": prec,
        "prompt_config": net.config.to_dict(),
        "preprocess": {
            "mean": [float(v) for v in encoding.IMAGE_MEAN], "std": [float(v) for v in encoding.IMAGE_STD],
            "crop": "a crop_size x crop_size window around the box grown by context of its size on each side (no "
                    "box: around the previous mask and positive clicks, else the whole frame), warped bilinearly "
                    "(outside the frame: the mean colour); image = (RGB uint8 - mean) / std; prompts = box, "
                    "positive clicks, negative clicks, previous mask (rdevos.prompt.encoding); prob warped back "
                    "to the frame"},
        "graphs": graph_entries(out, specs, files, opset if format == "onnx" else None),
    }
    if format == "onnx":
        manifest["opset"] = opset
    if verification:
        manifest["verification_max_rel_diff"] = verification
        manifest["verification_sizes"] = [list(PROMPT_TRACE_SIZE), [s, s]]
    manifest.update(extra)
    validate_manifest(manifest, backend=format, kind="prompt")
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("wrote %s", path)
    return path
