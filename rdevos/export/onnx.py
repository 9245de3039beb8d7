"""ONNX export of the per-frame graphs (see :mod:`rdevos.export.graphs`) with dynamic frame size.

Uses torch's TorchScript-based exporter (``dynamo=False``): it exports these graphs in about a second, handles
``dynamic_axes`` for H/W/K/N directly and keeps ``top_k`` a graph input (ONNX ``TopK`` with a K input). torch >= 2.9
marks that exporter deprecated; when it is removed, the ``torch.export`` path (which needs ``onnxscript``) has to
take over here.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rdevos.config import InferenceConfig
from rdevos.errors import InputError
from rdevos.export.graphs import (CheckCase, GraphRunner, GraphSpec, check_cases, check_export_args,
                                  default_config, example_inputs, export_parts, graph_specs, prepare_out_dir,
                                  verify_graphs, write_manifest)
from rdevos.export import runtime
from rdevos.inference import bookkeeping
from rdevos.export.runtime import INSTALL_HINT, MissingDependencyError, import_onnxruntime
from rdevos.model.network import RDEVOS

logger = logging.getLogger(__name__)

__all__ = ["export_onnx", "onnx_runner", "write_onnx_graphs", "check_onnx_graphs", "check_opset", "require_onnx",
           "ship_runtime", "DEFAULT_OPSET", "MIN_OPSET", "RUNTIME_FILE"]

#: Opset written by default (TopK with a dynamic K input needs >= 11 in torch's exporter; 17 is widely supported).
DEFAULT_OPSET = 17
MIN_OPSET = 11
#: Copy of :mod:`rdevos.export.runtime` written next to the graphs: ``from rdevos_runtime import OnnxEngine`` works
#: in an environment with numpy and onnxruntime only (``pip install rdevos`` itself pulls in torch).
RUNTIME_FILE = "rdevos_runtime.py"


def _export_kwargs() -> dict[str, Any]:
    # torch < 2.5 has no ``dynamo`` argument (and only the TorchScript-based exporter).
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def onnx_runner(paths: Mapping[str, Path], specs: Mapping[str, GraphSpec]) -> GraphRunner:
    """A :data:`~rdevos.export.graphs.GraphRunner` over onnxruntime sessions of the written graphs (CPU, created on
    first use). Raises :class:`MissingDependencyError` when onnxruntime is not installed."""
    ort = import_onnxruntime()
    sessions: dict[str, Any] = {}

    def run(name: str, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
        if name not in sessions:
            sessions[name] = ort.InferenceSession(str(paths[name]), providers=["CPUExecutionProvider"])
        feeds = {t.name: x.numpy() for t, x in zip(specs[name].inputs, inputs)}
        return list(sessions[name].run(None, feeds))

    return run


def export_onnx(model: RDEVOS, out_dir: str | Path, *, config: InferenceConfig | None = None,
                precision: str = "fp32", objects: int | str | None = None, opset: int | None = None,
                verify: bool = True) -> Path:
    """Export the key encoder, value encoder, segment (memory read + decoder) and compress graphs as ONNX.

    Args:
        model: the network (left unchanged; a CPU copy is exported).
        out_dir: folder for ``<graph>.onnx``, ``manifest.json`` and :data:`RUNTIME_FILE` (created; existing files
            are replaced).
        config: inference settings recorded in the manifest; default: the model's own inference defaults.
        precision: ``fp32`` or ``fp16`` (fp16 weights, features and memory; affinity/softmax and the
            probabilities stay fp32).
        objects: fixed object count, or ``None``/``"dynamic"`` for any number of objects.
        opset: ONNX opset (default :data:`DEFAULT_OPSET`, at least :data:`MIN_OPSET`).
        verify: if onnxruntime is installed, run every graph on the traced example and on a frame size, object
            count and top-k it was not traced with (:func:`~rdevos.export.graphs.verify_graphs`), and record the
            max relative difference to PyTorch in the manifest.
    Returns:
        Path of the written ``manifest.json``.
    Raises:
        MissingDependencyError: the onnx package is not installed.
        InputError: bad precision, object count or opset.
        ExportCheckError: an exported graph fails the self-check (no manifest is written).
    """
    prec, k = check_export_args(precision, objects)
    opset = check_opset(opset)
    config = default_config(model, config)
    out = prepare_out_dir(out_dir)
    require_onnx()
    specs = graph_specs(model.config, precision=prec, objects=k)
    parts = export_parts(model, prec)
    ex = example_inputs(parts, specs, top_k=config.top_k, objects=k)
    files = write_onnx_graphs(parts, specs, ex, out, opset)
    verification: dict[str, float] = {}
    if verify:
        cases = check_cases(parts, specs, ex, top_k=config.top_k, objects=k)
        verification = check_onnx_graphs(parts, specs, cases, out, files, prec)
    ship_runtime(out)
    manifest = write_manifest(out, backend="onnx", model=model, config=config, precision=prec, objects=k,
                              specs=specs, files=files, opset=opset, verification=verification,
                              extra={"runtime": RUNTIME_FILE})
    logger.info("wrote %s", manifest)
    return manifest


def check_opset(opset: int | None) -> int:
    """The opset to write: :data:`DEFAULT_OPSET` for ``None``; :class:`InputError` below :data:`MIN_OPSET`."""
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise InputError(f"opset {opset} is too old: the graphs need TopK with a dynamic K (opset >= {MIN_OPSET})")
    return opset


def require_onnx() -> None:
    """:class:`MissingDependencyError` naming the extra when the onnx package is missing."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it to serialise the graphs)
    except ImportError as e:
        raise MissingDependencyError(f"ONNX export needs the onnx package ({e}); install it with {INSTALL_HINT}"
                                     ) from e


def write_onnx_graphs(parts: Mapping[str, nn.Module], specs: Mapping[str, GraphSpec],
                      inputs: Mapping[str, tuple[torch.Tensor, ...]], out: Path, opset: int) -> dict[str, str]:
    """``torch.onnx.export`` each part, traced on ``inputs``, to ``out/<name>.onnx`` with the specs' names and
    dynamic axes; returns graph name -> file name."""
    files: dict[str, str] = {}
    for name, part in parts.items():
        spec = specs[name]
        path = out / f"{name}.onnx"
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # The TorchScript-based exporter's deprecation notice, tracer warnings about Python-side shape checks
            # (the checks hold for every traced shape) and its note that the reversed-pads Slice of a dynamic
            # F.pad cannot be constant-folded are noise for users of the CLI.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1 can be constant folded")
            torch.onnx.export(part, inputs[name], str(path), opset_version=opset, do_constant_folding=True,
                              input_names=[t.name for t in spec.inputs],
                              output_names=[t.name for t in spec.outputs],
                              dynamic_axes=spec.dynamic_axes(), **_export_kwargs())
        files[name] = path.name
        logger.info("exported %s (%.1f MB) in %.1f s", path, path.stat().st_size / 1e6, time.perf_counter() - t0)
    return files


def check_onnx_graphs(parts: Mapping[str, nn.Module], specs: Mapping[str, GraphSpec], cases: Sequence[CheckCase],
                      out: Path, files: Mapping[str, str], precision: str) -> dict[str, float]:
    """The self-check (:func:`~rdevos.export.graphs.verify_graphs`) on onnxruntime; ``{}`` with a warning when
    onnxruntime is not installed."""
    try:
        run = onnx_runner({n: out / f for n, f in files.items()}, specs)
    except MissingDependencyError:
        logger.warning("onnxruntime is not installed: the exported graphs were not checked (%s)", INSTALL_HINT)
        return {}
    verification = verify_graphs(parts, specs, cases, run, precision=precision, where=out)
    logger.info("self-check passed: onnxruntime vs PyTorch max relative difference %s",
                ", ".join(f"{n} {v:.1e}" for n, v in verification.items()))
    return verification


def ship_runtime(out: Path, *modules: tuple[str, str]) -> None:
    """Copy the torch-free runtime (:data:`RUNTIME_FILE`), the bookkeeping it imports and further ``modules``
    (``(source file, name in the export)``) into an export folder."""
    shutil.copyfile(runtime.__file__, out / RUNTIME_FILE)
    shutil.copyfile(bookkeeping.__file__, out / bookkeeping.SHIPPED_NAME)  # the runtime imports it
    for src, name in modules:
        shutil.copyfile(src, out / name)
