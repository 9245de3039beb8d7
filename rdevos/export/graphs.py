"""The per-frame parts of RDE-VOS as export-friendly modules, their input/output spec, and the export manifest.

Four graphs cover everything the streaming engine runs per frame:

``key_encoder``    image -> key, f16_thin, f16, f8, f4
``value_encoder``  image, f16, masks -> value (one per object)
``segment``        memory + query features + top_k -> per-object probabilities (affinity, top-k softmax, readout,
                   decoder, sigmoid)
``compress``       [previous RDE, new memory frame] -> new RDE (the SAM memory compressor)

The wrappers compute exactly what :class:`rdevos.inference.engine.InferenceEngine` computes, written without
Python-level shape branches so that one trace serves any frame size and (optionally) any number of objects.
The manifest (:data:`MANIFEST_NAME`) records the graphs' inputs/outputs with symbolic shapes, the model config,
the inference settings and the preprocessing constants; :mod:`rdevos.export.runtime` drives the graphs from it.
The graphs are traced on a :data:`TRACE_SIZE` frame; :func:`verify_graphs` (the export self-check) runs the written
graphs there and at :data:`CHECK_SIZE` with another object count and top-k, so a shape the trace froze fails the
export rather than the user's first frame.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rdevos.config import InferenceConfig, ModelConfig, Precision
from rdevos.errors import InputError
from rdevos.export.runtime import (EXPORT_MANIFEST_FORMATS, FORMAT_NAME, FORMAT_VERSION, GRAPH_NAMES, MANIFEST_NAME,
                                   PAD_MULTIPLE, ExportCheckError, file_sha256, validate_manifest)
from rdevos.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD
from rdevos.model.aggregation import match_norm
from rdevos.model.network import RDEVOS

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "GraphSpec", "TensorSpec", "graph_specs", "export_parts", "example_inputs",
           "check_cases", "verify_graphs", "export_model", "write_manifest", "TRACE_SIZE", "CHECK_SIZE"]

#: Formats :func:`export_model` writes.
EXPORT_FORMATS = ("onnx", "torchscript")
#: Padded frame size (H, W) the graphs are traced on, and the object count of a dynamic object axis there.
TRACE_SIZE, TRACE_OBJECTS = (64, 96), 2
#: Size and object count of the export self-check: not the traced ones (odd H/16 and W/16, one more object), so a
#: shape the trace froze makes the check fail instead of the user's first real frame.
CHECK_SIZE, CHECK_OBJECTS = (80, 112), 3
#: Max relative difference (to max(1, max |PyTorch|)) of an exported graph's outputs that the self-check accepts
#: (measured: <= 3e-6 fp32, <= 5e-3 fp16 on the shipped models).
CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for dynamic axes) and dtype name of one graph input or output."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one exported graph, in call order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s ``dynamic_axes``: every string dimension of every input and output."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
                for t in (*self.inputs, *self.outputs) if any(isinstance(d, str) for d in t.shape)}


def graph_specs(config: ModelConfig, *, precision: str = "fp32", objects: int | None = None
                ) -> dict[str, GraphSpec]:
    """The input/output spec of every graph.

    Args:
        config: the network's architecture.
        precision: ``fp32`` or ``fp16`` (features, values and images in that dtype; probabilities always fp32).
        objects: a fixed number of objects, or ``None`` for a dynamic object axis ``K``.
    Returns:
        graph name -> :class:`GraphSpec`; no ``compress`` for single-object (stage-0) networks.
    """
    ft = "float16" if precision == "fp16" else "float32"
    c4, c8, c16 = config.key_channels
    ck, cv = config.key_dim, config.value_dim
    k: int | str = "K" if objects is None else objects
    kcv: int | str = f"K*{cv}" if objects is None else objects * cv
    h16, w16 = "H/16", "W/16"

    def ts(name: str, shape: tuple[int | str, ...], dtype: str = ft) -> TensorSpec:
        return TensorSpec(name, shape, dtype)

    image = ts("image", (1, 3, "H", "W"))
    feats = (ts("key", (1, ck, h16, w16)), ts("f16_thin", (1, cv, h16, w16)), ts("f16", (1, c16, h16, w16)),
             ts("f8", (1, c8, "H/8", "W/8")), ts("f4", (1, c4, "H/4", "W/4")))
    specs = {
        "key_encoder": GraphSpec((image,), feats),
        "value_encoder": GraphSpec((image, feats[2], ts("masks", (1, k, "H", "W"))),
                                   (ts("value", (1, k, cv, h16, w16)),)),
        "segment": GraphSpec((ts("mem_key", (1, ck, "N")), ts("mem_value", (1, "N", kcv)), feats[0], feats[1],
                              feats[3], feats[4], ts("top_k", (), "int64")),
                             (ts("prob", (k, "H", "W"), "float32"),)),
    }
    if not config.single_object:
        specs["compress"] = GraphSpec((ts("key", (1, ck, 2, h16, w16)), ts("value", (1, k, cv, 2, h16, w16))),
                                      (ts("rde_key", (1, ck, 1, h16, w16)), ts("rde_value", (1, k, cv, 1, h16, w16))))
    return specs


# ---------------------------------------------------------------------------------------------------- parts
def _topk_impl(aff: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.topk(aff, int(k), dim=2)


with warnings.catch_warnings():  # torch >= 2.10 marks jit.script deprecated; it is still what keeps k dynamic
    warnings.simplefilter("ignore", DeprecationWarning)
    # Scripted so that k stays a graph input in both a jit trace and the ONNX export (TopK with a K input);
    # a plain call would bake the example's k into the trace.
    _topk = torch.jit.script(_topk_impl)


class KeyEncoderPart(nn.Module):
    """image (1, 3, H, W) normalised, H and W multiples of 16 -> key, f16_thin, f16, f8, f4."""

    def __init__(self, model: RDEVOS) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.encode_key(image))


class ValueEncoderPart(nn.Module):
    """image (1, 3, H, W), f16 (1, C16, H/16, W/16), masks (1, K, H, W) -> value (1, K, Cv, H/16, W/16).

    Same as :meth:`RDEVOS.encode_value` with one frame; "others" = sum - self, which is exactly 0 for K = 1, so no
    branch on K is needed.
    """

    def __init__(self, model: RDEVOS) -> None:
        super().__init__()
        self.model = model
        self.single_object = model.config.single_object

    def forward(self, image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        m = masks[0]  # K, H, W
        k = m.shape[0]
        if self.single_object:
            extra = m.unsqueeze(1)
        else:
            extra = torch.stack([m, m.sum(dim=0, keepdim=True) - m], dim=1)  # K, 2, H, W
        value = self.model.value_encoder(image.expand(k, -1, -1, -1), f16.expand(k, -1, -1, -1), extra)
        return value.unsqueeze(0)


class SegmentPart(nn.Module):
    """Memory read (L2 affinity, top-k softmax, gathered readout) + decoder + sigmoid for one object group.

    Inputs: mem_key (1, Ck, N); mem_value (1, N, K*Cv) entry-major; key, f16_thin, f8, f4 of the query frame;
    top_k () int64, at most N. Output: (K, H, W) float32 object probabilities.
    The affinity and softmax run in fp32 (as in the engine); the readout in the values' dtype.
    """

    def __init__(self, model: RDEVOS) -> None:
        super().__init__()
        self.model = model
        self.value_dim = model.config.value_dim
        self.scale = 1.0 / math.sqrt(model.config.key_dim)

    def forward(self, mem_key: torch.Tensor, mem_value: torch.Tensor, key: torch.Tensor, f16_thin: torch.Tensor,
                f8: torch.Tensor, f4: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
        h, w = key.shape[2], key.shape[3]
        mk = mem_key.float()
        qk = key.flatten(2).float()
        sq = mk.pow(2).sum(1)
        aff = torch.baddbmm(sq.unsqueeze(1), qk.transpose(1, 2), mk, beta=-self.scale, alpha=2 * self.scale)
        values, indices = _topk(aff, top_k)  # 1, M, k
        weights = (values - values[:, :, :1]).exp()
        weights = weights / weights.sum(dim=2, keepdim=True)
        table = mem_value[0]  # N, K*Cv
        picked = table[indices[0]]  # M, k, K*Cv
        r = torch.matmul(weights[0].unsqueeze(1).to(table.dtype), picked).squeeze(1)  # M, K*Cv
        readout = r.transpose(0, 1).reshape(-1, self.value_dim, h, w)
        logits = self.model.segment(readout, f16_thin, f8, f4)
        return torch.sigmoid(logits[:, 0].float())


class CompressPart(nn.Module):
    """key (1, Ck, 2, h, w), value (1, K, Cv, 2, h, w) -> new RDE key (1, Ck, 1, h, w) and value (1, K, Cv, 1, h, w).

    Computes in float32 whatever the inputs' dtype (the compressor of an fp16 export keeps fp32 weights): the
    non-local block's unnormalised affinity overflows fp16 on real features (rdevos-lite2: NaN RDE from the first
    update), and the compressor runs on one 1/16-resolution frame pair per memory update, so fp32 costs nothing.
    """

    def __init__(self, model: RDEVOS) -> None:
        super().__init__()
        self.model = model

    def forward(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # MemoryCompressor.forward with batch 1 spelled out: its reshape back to (B, K, ...) leaves ONNX shape
        # inference with a wrong static dim on the output; unsqueeze keeps the declared shape exact.
        mc = self.model.mem_compress
        k, v = key.float(), value.float()
        new_key = mc.compress_key(mc.key_encoder(k))
        new_value = mc.compress_value(mc.value_encoder(v[0])).unsqueeze(0)  # 1, K, Cv, 1, h, w
        if mc.norm_match:  # ModelConfig.rde_norm
            new_key, new_value = match_norm(new_key, k), match_norm(new_value, v)
        return new_key.to(key.dtype), new_value.to(value.dtype)


_PARTS: dict[str, type[nn.Module]] = {"key_encoder": KeyEncoderPart, "value_encoder": ValueEncoderPart,
                                      "segment": SegmentPart, "compress": CompressPart}


def export_parts(model: RDEVOS, precision: str = "fp32") -> dict[str, nn.Module]:
    """Eval-mode part modules around a CPU copy of ``model`` (the caller's model is left untouched)."""
    net = copy.deepcopy(model).cpu().eval()
    if precision == "fp16":
        net = net.half()
        if not model.config.single_object:
            net.mem_compress.float()  # see CompressPart
    names = [n for n in GRAPH_NAMES if n != "compress" or not model.config.single_object]
    return {n: _PARTS[n](net).eval() for n in names}


@torch.no_grad()
def example_inputs(parts: Mapping[str, nn.Module], specs: Mapping[str, GraphSpec], *, top_k: int,
                   objects: int | None = None, size: tuple[int, int] = TRACE_SIZE, seed: int = 0
                   ) -> dict[str, tuple[torch.Tensor, ...]]:
    """Consistent example inputs for every graph (traced through the real parts), on a ``size`` padded frame.

    Uses :data:`TRACE_OBJECTS` (2) objects for a dynamic object axis (so no size-1 broadcast gets baked into the
    trace). ``top_k`` is capped at the memory size.
    """
    g = torch.Generator().manual_seed(seed)
    dtype = _DTYPES[specs["key_encoder"].inputs[0].dtype]
    k = objects or TRACE_OBJECTS
    image = torch.randn(1, 3, *size, generator=g).to(dtype)
    key, f16_thin, f16, f8, f4 = parts["key_encoder"](image)
    masks = torch.rand(1, k, *size, generator=g)
    masks = (masks / masks.sum(1, keepdim=True).clamp(min=1)).to(dtype)
    value = parts["value_encoder"](image, f16, masks)
    # The second memory frame is another image (a mirrored key would tie affinities exactly, and the top-k would
    # then pick between tied entries with different values arbitrarily: a false difference in the self-check).
    image2 = torch.randn(1, 3, *size, generator=g).to(dtype)
    key2, _, f16_2, _, _ = parts["key_encoder"](image2)
    value2 = parts["value_encoder"](image2, f16_2, masks.flip(-1))
    keys = torch.stack([key, key2], dim=2)  # 1, Ck, 2, h, w
    values = torch.stack([value[0], value2[0]], dim=2)[None]  # 1, K, Cv, 2, h, w
    n = keys[0, 0].numel()
    mem_key = keys.flatten(2)
    mem_value = values.flatten(3).flatten(1, 2).transpose(1, 2).contiguous()  # 1, N, K*Cv
    out = {"key_encoder": (image,), "value_encoder": (image, f16, masks),
           "segment": (mem_key, mem_value, key, f16_thin, f8, f4, torch.tensor(min(top_k, n)))}
    if "compress" in parts:
        out["compress"] = (keys, values)
    return out


# ---------------------------------------------------------------------------------------------------- self-check
#: Runs one exported graph on torch inputs; returns its outputs as numpy arrays, in the spec's order.
GraphRunner = Callable[[str, Sequence[torch.Tensor]], Sequence[np.ndarray]]
#: (what the case is, for messages; graph name -> its inputs).
CheckCase = tuple[str, Mapping[str, Sequence[torch.Tensor]]]


def check_cases(parts: Mapping[str, nn.Module], specs: Mapping[str, GraphSpec],
                traced: Mapping[str, Sequence[torch.Tensor]], *, top_k: int, objects: int | None) -> list[CheckCase]:
    """The self-check's inputs: the traced example, and a frame size, object count and top-k it was not traced with."""
    ex = example_inputs(parts, specs, top_k=max(1, top_k - 1), objects=objects or CHECK_OBJECTS, size=CHECK_SIZE,
                        seed=1)
    k_trace, k_check = objects or TRACE_OBJECTS, objects or CHECK_OBJECTS
    return [(f"the traced {TRACE_SIZE[0]}x{TRACE_SIZE[1]} frame with {k_trace} object(s)", traced),
            (f"a {CHECK_SIZE[0]}x{CHECK_SIZE[1]} frame with {k_check} object(s) (traced on {TRACE_SIZE[0]}x"
             f"{TRACE_SIZE[1]} with {k_trace})", ex)]


def _error_line(e: BaseException) -> str:
    """``Type: message`` of a runtime's error on one line (the TorchScript interpreter puts its serialized traceback
    first and the message, already prefixed with its type, last)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [""]
    if lines[0].startswith("The following operation failed"):
        return lines[-1][:300]
    return f"{type(e).__name__}: {lines[0]}"[:300]


def max_rel_diff(got: np.ndarray, expected: torch.Tensor) -> float:
    """max |got - expected| / max(1, max |expected|), in float32."""
    ref = expected.detach().float().cpu().numpy()
    return float(np.abs(np.asarray(got).astype(np.float32) - ref).max(initial=0.0) / max(1.0, np.abs(ref).max(
        initial=0.0)))


@torch.no_grad()
def verify_graphs(parts: Mapping[str, nn.Module], specs: Mapping[str, GraphSpec], cases: Sequence[CheckCase],
                  run: GraphRunner, *, precision: str, where: str | Path) -> dict[str, float]:
    """Run every exported graph on every case and compare it with its PyTorch part.

    Returns graph name -> the largest relative difference over the cases. Raises :class:`ExportCheckError` (naming
    the graph, the case, the output and what differs) when a graph fails to run, returns another shape, or differs
    by more than :data:`CHECK_TOLERANCE`; the graphs in ``where`` are then not usable.
    """
    tol = CHECK_TOLERANCE[precision]
    worst: dict[str, float] = {}
    for name, part in parts.items():
        outputs = [t.name for t in specs[name].outputs]
        for label, inputs in cases:
            def fail(problem: str) -> ExportCheckError:
                return ExportCheckError(f"export self-check failed: graph {name!r} on {label}: {problem}; the "
                                        f"export in {where} does not compute what the PyTorch model does (no "
                                        "manifest written)")

            expected = part(*inputs[name])
            expected = expected if isinstance(expected, tuple) else (expected,)
            try:
                got = list(run(name, inputs[name]))
            except Exception as e:  # onnxruntime and the TorchScript interpreter raise their own types
                raise fail(f"it does not run ({_error_line(e)})") from e
            if len(got) != len(expected):
                raise fail(f"{len(got)} outputs, expected {len(expected)}")
            for out_name, a, b in zip(outputs, got, expected):
                if not bool(torch.isfinite(b).all()):
                    raise fail(f"PyTorch's own output {out_name!r} is not finite in {precision} (overflow); "
                               "export in fp32")
                if tuple(a.shape) != tuple(b.shape):
                    raise fail(f"output {out_name!r} has shape {tuple(a.shape)}, PyTorch gives {tuple(b.shape)}")
                diff = max_rel_diff(a, b)
                if not diff <= tol:  # also catches NaN
                    raise fail(f"output {out_name!r} differs from PyTorch by {diff:.3g} (relative; at most {tol:g} "
                               f"accepted for {precision})")
                worst[name] = max(worst.get(name, 0.0), diff)
    return worst


# ---------------------------------------------------------------------------------------------------- manifest
def graph_entries(out_dir: Path, specs: Mapping[str, GraphSpec], files: Mapping[str, str], opset: int | None
                  ) -> dict[str, dict[str, Any]]:
    """The manifest's ``graphs``: file, its sha256, inputs and outputs (and opset) of each graph."""
    graphs = {}
    for name, spec in specs.items():
        entry: dict[str, Any] = {"file": files[name], "sha256": file_sha256(out_dir / files[name]),
                                 "inputs": [t.to_dict() for t in spec.inputs],
                                 "outputs": [t.to_dict() for t in spec.outputs]}
        if opset is not None:
            entry["opset"] = opset
        graphs[name] = entry
    return graphs


def write_manifest(out_dir: Path, *, backend: str, model: RDEVOS, config: InferenceConfig, precision: str,
                   objects: int | None, specs: Mapping[str, GraphSpec], files: Mapping[str, str],
                   opset: int | None = None, verification: Mapping[str, float] | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``manifest.json`` describing an export folder (``extra``: more top-level entries); returns its path."""
    from rdevos import __version__

    graphs = graph_entries(out_dir, specs, files, opset)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "backend": backend,
        "rdevos_version": __version__, "torch_version": torch.__version__.split("+")[0],
        "precision": precision, "objects": "dynamic" if objects is None else objects,
        "model_config": model.config.to_dict(),
        "inference": {k: v for k, v in config.to_dict().items() if k != "precision"},
        "preprocess": {
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "pad_multiple": PAD_MULTIPLE,
            "resize": "RGB/255, normalise, then bicubic (a=-0.75, align_corners=False, no antialias) to short "
                      "side inference.resolution (null: native size), then zero-pad to pad_multiple "
                      "(left/top = floor(diff/2))",
            "output": "per-object probabilities -> soft aggregation with background (clamp 1e-7) -> unpad -> "
                      "bilinear (align_corners=False) to the input size -> argmax"},
        "graphs": graphs,
    }
    if opset is not None:
        manifest["opset"] = opset
    if verification:
        manifest["verification_max_rel_diff"] = {k: float(v) for k, v in verification.items()}
        manifest["verification_sizes"] = [list(TRACE_SIZE), list(CHECK_SIZE)]
    manifest.update(extra or {})
    validate_manifest(manifest, backend=backend)
    path = out_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def check_export_args(precision: str | Precision, objects: int | str | None) -> tuple[str, int | None]:
    """Normalise and validate ``precision`` (fp32/fp16) and ``objects`` (positive int, or None/"dynamic")."""
    try:
        p = Precision(precision).value
    except ValueError:
        p = str(precision)
    if p not in ("fp32", "fp16"):
        raise InputError(f"export precision must be fp32 or fp16, got {p!r} (bf16 is not an ONNX/TorchScript "
                         "deployment type here)")
    if objects is None or objects == "dynamic":
        return p, None
    try:
        k = int(objects)
    except (TypeError, ValueError):
        raise InputError(f"objects must be a positive number or 'dynamic', got {objects!r}") from None
    if k < 1:
        raise InputError(f"objects must be a positive number or 'dynamic', got {objects!r}")
    return p, k


def export_model(model: RDEVOS, out_dir: str | Path, *, format: str = "onnx", config: InferenceConfig | None = None,
                 precision: str = "fp32", objects: int | str | None = None, opset: int | None = None) -> Path:
    """Export ``model`` as per-frame graphs plus ``manifest.json`` into ``out_dir``.

    Args:
        format: ``"onnx"`` or ``"torchscript"``.
        config: inference settings recorded in the manifest (top_k, mem_every, memory mode, schedule,
            resolution); default: ``InferenceConfig()`` with the model's own inference defaults.
        precision: ``fp32`` or ``fp16``.
        objects: a fixed number of objects, or ``None``/``"dynamic"``.
        opset: ONNX opset (ONNX only; default :data:`rdevos.export.onnx.DEFAULT_OPSET`).
    Returns:
        The manifest path.
    """
    if format == "onnx":
        from rdevos.export.onnx import export_onnx

        return export_onnx(model, out_dir, config=config, precision=precision, objects=objects, opset=opset)
    if format == "torchscript":
        if opset is not None:
            raise InputError("--opset applies to ONNX exports only")
        from rdevos.export.torchscript import export_torchscript

        return export_torchscript(model, out_dir, config=config, precision=precision, objects=objects)
    raise InputError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")


def default_config(model: RDEVOS, config: InferenceConfig | None) -> InferenceConfig:
    """``config``, else the default settings with the model's own inference defaults applied."""
    return config if config is not None else InferenceConfig.for_model(model.inference_defaults)


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the export folder; refuse a path that is a file.

    An earlier export's ``manifest.json`` there is removed first (it is written again once the new graphs pass the
    self-check, so a failed export leaves no manifest that points at replaced graphs); a ``manifest.json`` that is
    not an rdevos export manifest is refused rather than overwritten.
    """
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise InputError(f"export output {p} exists and is not a folder")
    p.mkdir(parents=True, exist_ok=True)
    old = p / MANIFEST_NAME
    if old.exists() or old.is_symlink():
        try:
            ours = old.is_file() and json.loads(old.read_text()).get("format") in EXPORT_MANIFEST_FORMATS
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            ours = False
        if not ours:
            raise InputError(f"{old} exists and is not an rdevos export manifest; export into another folder")
        old.unlink()
    return p
