"""TorchScript export of the per-frame graphs (``torch.jit.trace`` per part) and an engine that runs them.

Each part is traced once on a small example frame. Shapes are recorded as size ops, so the traced graphs accept any
padded frame size (and any object count with ``objects=None``); ``top_k`` stays an input because the top-k call is
a scripted function. Limits:

- a trace keeps the operations of the example run only; the parts have no data-dependent Python control flow, so
  nothing is lost, but a traced graph is not a general ``torch.jit.script`` of the network;
- torch >= 2.10 marks TorchScript (``jit.trace``/``save``/``load``) deprecated; the files still load in this torch
  and in LibTorch (C++), which is the reason to use this format; torch-free deployment is the ONNX export's job;
- fp16 traces are slow on CPU (no fast fp16 kernels); use them on CUDA.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from rdevos.config import InferenceConfig
from rdevos.export.graphs import (CheckCase, GraphRunner, GraphSpec, check_cases, check_export_args, default_config,
                                  example_inputs, export_parts, graph_specs, prepare_out_dir, verify_graphs,
                                  write_manifest)
from rdevos.export.runtime import ExportedEngine, ExportedPromptPredictor, load_manifest
from rdevos.model.network import RDEVOS

logger = logging.getLogger(__name__)

__all__ = ["export_torchscript", "TorchScriptEngine", "TorchScriptPromptPredictor", "write_torchscript_graphs", "check_torchscript_graphs",
           "torchscript_runner", "load_modules"]


def export_torchscript(model: RDEVOS, out_dir: str | Path, *, config: InferenceConfig | None = None,
                       precision: str = "fp32", objects: int | str | None = None, verify: bool = True) -> Path:
    """Trace the four per-frame parts to ``<graph>.pt`` (``torch.jit.save``) and write ``manifest.json``.

    Arguments as :func:`rdevos.export.onnx.export_onnx`; ``verify`` loads the saved graphs back and checks them
    against PyTorch on the traced example and on a frame size, object count and top-k they were not traced with
    (:class:`~rdevos.export.runtime.ExportCheckError` if they differ; no manifest is written then). Returns the
    manifest path.
    """
    prec, k = check_export_args(precision, objects)
    config = default_config(model, config)
    out = prepare_out_dir(out_dir)
    specs = graph_specs(model.config, precision=prec, objects=k)
    parts = export_parts(model, prec)
    ex = example_inputs(parts, specs, top_k=config.top_k, objects=k)
    files = write_torchscript_graphs(parts, ex, out)
    verification: dict[str, float] = {}
    if verify:
        cases = check_cases(parts, specs, ex, top_k=config.top_k, objects=k)
        verification = check_torchscript_graphs(parts, specs, cases, out, files, prec)
    manifest = write_manifest(out, backend="torchscript", model=model, config=config, precision=prec, objects=k,
                              specs=specs, files=files, verification=verification)
    logger.info("wrote %s", manifest)
    return manifest


def write_torchscript_graphs(parts: Mapping[str, nn.Module], inputs: Mapping[str, tuple[torch.Tensor, ...]],
                             out: Path) -> dict[str, str]:
    """``torch.jit.trace`` each part on ``inputs`` and save it to ``out/<name>.pt``; returns graph name -> file."""
    files: dict[str, str] = {}
    for name, part in parts.items():
        t0 = time.perf_counter()
        path = out / f"{name}.pt"
        with warnings.catch_warnings(), torch.no_grad():
            # torch >= 2.10 marks TorchScript deprecated; the format still loads in LibTorch, which is its point.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(part, inputs[name], check_trace=False)
            torch.jit.save(traced, str(path))
        files[name] = path.name
        logger.info("traced %s in %.1f s", path, time.perf_counter() - t0)
    return files


def check_torchscript_graphs(parts: Mapping[str, nn.Module], specs: Mapping[str, GraphSpec],
                             cases: Sequence[CheckCase], out: Path, files: Mapping[str, str], precision: str
                             ) -> dict[str, float]:
    """The self-check (:func:`~rdevos.export.graphs.verify_graphs`) on the saved graphs, loaded back."""
    verification = verify_graphs(parts, specs, cases, torchscript_runner({n: out / f for n, f in files.items()}),
                                 precision=precision, where=out)
    logger.info("self-check passed: TorchScript vs PyTorch max relative difference %s",
                ", ".join(f"{n} {v:.1e}" for n, v in verification.items()))
    return verification


def load_modules(paths: Mapping[str, Path], device: torch.device | str = "cpu") -> dict[str, torch.jit.ScriptModule]:
    """``torch.jit.load`` each graph file (eval mode, on ``device``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return {name: torch.jit.load(str(p), map_location=torch.device(device)).eval() for name, p in paths.items()}


def torchscript_runner(paths: Mapping[str, Path]) -> GraphRunner:
    """A :data:`~rdevos.export.graphs.GraphRunner` over the saved graphs, loaded back from their files (CPU)."""
    modules = load_modules(paths)

    @torch.no_grad()
    def run(name: str, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
        out = modules[name](*inputs)
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    return run


class TorchScriptEngine(ExportedEngine):
    """Segment a video with a TorchScript export: the same streaming loop as :class:`OnnxEngine`.

    Args:
        path: the export folder (or its ``manifest.json``).
        top_k, mem_every: override the manifest's settings.
        device: where the traced graphs run.
    """

    def __init__(self, path: str | Path, *, top_k: int | None = None, mem_every: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        manifest, folder = load_manifest(path, backend="torchscript")
        dev = torch.device(device)
        self.modules = load_modules({name: folder / g["file"] for name, g in manifest["graphs"].items()}, dev)
        order = {name: [t["name"] for t in g["inputs"]] for name, g in manifest["graphs"].items()}

        @torch.inference_mode()
        def run(graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            out = self.modules[graph](*[torch.from_numpy(feeds[n]).to(dev) for n in order[graph]])
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return [o.cpu().numpy() for o in outs]

        super().__init__(manifest, run, top_k=top_k, mem_every=mem_every)


class TorchScriptPromptPredictor(ExportedPromptPredictor):
    """Prompt to mask with a prompt-model TorchScript export (``rdevos export --prompt-model M --format
    torchscript``); same contract as :class:`rdevos.prompt.PromptPredictor`.

    Args:
        path: the export folder (or its ``manifest.json``).
        device: where the traced graph runs.
        keep_clicked: as :class:`~rdevos.export.runtime.ExportedPromptPredictor`.
    """

    def __init__(self, path: str | Path, *, device: torch.device | str = "cpu", keep_clicked: bool = True) -> None:
        manifest, folder = load_manifest(path, backend="torchscript", kind="prompt")
        dev = torch.device(device)
        self.modules = load_modules({name: folder / g["file"] for name, g in manifest["graphs"].items()}, dev)

        @torch.inference_mode()
        def run(graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            out = self.modules[graph](*[torch.from_numpy(feeds[n]).to(dev) for n in ("image", "prompts")])
            return [out.cpu().numpy()]

        super().__init__(manifest, run, keep_clicked=keep_clicked)
