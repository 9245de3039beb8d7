"""Run an exported RDE-VOS model with onnxruntime and numpy only (no PyTorch).

:class:`OnnxEngine` drives the graphs written by ``rdevos export`` (see :mod:`rdevos.export.graphs`) with the same
streaming loop and memory schedule as :class:`rdevos.inference.engine.InferenceEngine`: first-frame memory, RDE and
last memory frame per object group, ``mem_every``, ``top_k``, objects added on any frame. Preprocessing (resize,
pad, normalise), probability aggregation and the output resize are numpy re-implementations of the engine's torch
code, equal up to float rounding.

This module imports only numpy and the standard library (onnxruntime when an engine is built). ``import rdevos``
loads torch, so an ONNX export carries a copy of this file, ``rdevos_runtime.py``, and of the engine's torch-free
bookkeeping (:mod:`rdevos.inference.bookkeeping`: memory schedule, group order, mask-id checks) as
``rdevos_bookkeeping.py``: with numpy and onnxruntime only, ``from rdevos_runtime import OnnxEngine`` (export
folder on ``sys.path``) runs the export without torch.

:class:`OnnxPromptPredictor` runs a prompt-model export (box/clicks to mask) the same way; its crop and prompt
geometry is :mod:`rdevos.prompt.encoding` (numpy and OpenCV), shipped beside such an export as
``rdevos_prompt_encoding.py``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __name__.startswith("rdevos."):
    from rdevos.inference.bookkeeping import (InputError, RDEVOSError, channel_order, mask_object_ids, memory_due,
                                              new_object_ids)
else:  # loaded as a standalone file beside the export: the rdevos package (and with it torch) may be absent
    from rdevos_bookkeeping import (  # type: ignore[no-redef]  # noqa: I001 - shipped next to this file
        InputError, RDEVOSError, channel_order, mask_object_ids, memory_due, new_object_ids)


logger = logging.getLogger(__name__)

__all__ = ["OnnxEngine", "ExportedEngine", "OnnxPromptPredictor", "ExportedPromptPredictor", "MissingDependencyError",
           "ExportCheckError", "load_manifest", "validate_manifest", "onnx_sessions", "MANIFEST_NAME", "FORMAT_NAME",
           "PROMPT_FORMAT_NAME", "FORMAT_VERSION", "GRAPH_NAMES", "PROMPT_GRAPH_NAMES", "PAD_MULTIPLE"]

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "rdevos-export"
#: ``format`` of a prompt-model export's manifest (:mod:`rdevos.export.prompt`).
PROMPT_FORMAT_NAME = "rdevos-prompt-export"
EXPORT_MANIFEST_FORMATS = (FORMAT_NAME, PROMPT_FORMAT_NAME)
FORMAT_VERSION = 1
GRAPH_NAMES = ("key_encoder", "value_encoder", "segment", "compress")
#: The graph of a prompt-model export: crop + prompt maps -> object probability.
PROMPT_GRAPH_NAMES = ("prompt",)
PAD_MULTIPLE = 16
BACKENDS = ("onnx", "torchscript")
INSTALL_HINT = "pip install 'rdevos[export]'"

_MODES = ("two-frames-compress", "gt-compress", "last-compress", "compress", "two-frames", "gt", "last")
_COMPRESS_MODES = ("two-frames-compress", "gt-compress", "last-compress", "compress")
_LAST_MODES = ("two-frames-compress", "last-compress", "two-frames", "last")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}

Runner = Callable[[str, Mapping[str, np.ndarray]], list[np.ndarray]]


class MissingDependencyError(RDEVOSError, ImportError):
    """An optional dependency of the export feature (onnx / onnxruntime) is not installed."""


class ExportCheckError(RDEVOSError):
    """An exported graph does not run, or does not compute what the PyTorch model computes (the export self-check)."""


def import_onnxruntime() -> Any:
    """Import onnxruntime, or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(f"onnxruntime is not installed ({e}); install it with {INSTALL_HINT}") from e
    return onnxruntime


# ---------------------------------------------------------------------------------------------------- manifest
def validate_manifest(manifest: object, *, backend: str | None = None, source: str = "manifest",
                      kind: str = "vos") -> dict[str, Any]:
    """Check the structure of an export manifest; raise :class:`InputError` naming the first problem.

    Args:
        manifest: the parsed JSON.
        backend: required backend (``onnx`` or ``torchscript``), or None for either.
        kind: ``"vos"`` (the per-frame graphs of a video model, ``rdevos export --model``) or ``"prompt"`` (a
            prompt-to-mask model, ``rdevos export --prompt-model``).
    Returns:
        The manifest (a dict).
    """
    def bad(msg: str) -> InputError:
        return InputError(f"{source}: {msg}")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    fmt = manifest.get("format")
    want = PROMPT_FORMAT_NAME if kind == "prompt" else FORMAT_NAME
    if fmt in EXPORT_MANIFEST_FORMATS and fmt != want:
        if fmt == PROMPT_FORMAT_NAME:
            raise bad("this is a prompt-model export (box/clicks to mask), not a video model; load it with "
                      "OnnxPromptPredictor or rdevos.export.TorchScriptPromptPredictor")
        raise bad("this is a video-model export, not a prompt model; load it with OnnxEngine or "
                  "rdevos.export.TorchScriptEngine")
    if fmt != want:
        raise bad(f"not an rdevos export manifest (format {fmt!r}, expected {want!r})")
    version = manifest.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise bad(f"manifest version {version!r} is not supported by this rdevos (reads up to {FORMAT_VERSION}); "
                  "upgrade rdevos or re-export")
    got = manifest.get("backend")
    if got not in BACKENDS:
        raise bad(f"unknown backend {got!r}; expected one of {BACKENDS}")
    if backend is not None and got != backend:
        hint = {("vos", "onnx"): "OnnxEngine", ("vos", "torchscript"): "rdevos.export.TorchScriptEngine",
                ("prompt", "onnx"): "OnnxPromptPredictor",
                ("prompt", "torchscript"): "rdevos.export.TorchScriptPromptPredictor"}[kind, got]
        raise bad(f"this is a {got} export, not {backend}; load it with {hint}")
    if manifest.get("precision") not in ("fp32", "fp16"):
        raise bad(f"precision must be fp32 or fp16, got {manifest.get('precision')!r}")
    if kind == "prompt":
        needed = _validate_prompt_fields(manifest, bad)
    else:
        needed = _validate_vos_fields(manifest, bad)
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict):
        raise bad("missing 'graphs'")
    missing = [g for g in needed if g not in graphs]
    if missing:
        raise bad(f"graphs {missing} are missing (has {sorted(graphs)})")
    for name in needed:
        g = graphs[name]
        if not isinstance(g, dict) or not isinstance(g.get("file"), str) or not isinstance(g.get("inputs"), list) \
                or not isinstance(g.get("outputs"), list):
            raise bad(f"graph {name!r} needs 'file', 'inputs' and 'outputs'")
        for t in (*g["inputs"], *g["outputs"]):
            if not isinstance(t, dict) or not {"name", "shape", "dtype"} <= set(t):
                raise bad(f"graph {name!r}: every input/output needs name, shape and dtype, got {t!r}")
    return manifest


def _validate_vos_fields(manifest: dict[str, Any], bad: Callable[[str], InputError]) -> list[str]:
    """Checks of a video-model manifest's own fields; returns the graphs it must have."""
    objects = manifest.get("objects")
    if objects != "dynamic" and not (isinstance(objects, int) and objects >= 1):
        raise bad(f"objects must be 'dynamic' or a positive int, got {objects!r}")
    inf = manifest.get("inference")
    if not isinstance(inf, dict):
        raise bad("missing 'inference' settings")
    for key, typ in (("top_k", int), ("mem_every", int)):
        if not isinstance(inf.get(key), typ) or inf[key] < 1:
            raise bad(f"inference.{key} must be a positive int, got {inf.get(key)!r}")
    if inf.get("memory_mode") not in _MODES:
        raise bad(f"inference.memory_mode {inf.get('memory_mode')!r} is not one of {_MODES}")
    if inf.get("schedule") not in ("absolute", "relative"):
        raise bad(f"inference.schedule {inf.get('schedule')!r} is not 'absolute' or 'relative'")
    res = inf.get("resolution")
    if res is not None and not (isinstance(res, int) and res >= 16):
        raise bad(f"inference.resolution must be null or an int >= 16, got {res!r}")
    pre = manifest.get("preprocess")
    if not isinstance(pre, dict) or len(pre.get("mean", ())) != 3 or len(pre.get("std", ())) != 3 \
            or not isinstance(pre.get("pad_multiple"), int) or pre["pad_multiple"] < 1:
        raise bad("'preprocess' needs mean and std (3 values each) and an int pad_multiple")
    single = bool((manifest.get("model_config") or {}).get("single_object", False))
    return [g for g in GRAPH_NAMES if g != "compress" or not single]


def _validate_prompt_fields(manifest: dict[str, Any], bad: Callable[[str], InputError]) -> list[str]:
    """Checks of a prompt-model manifest's own fields; returns the graphs it must have."""
    cfg = manifest.get("prompt_config")
    if not isinstance(cfg, dict):
        raise bad("missing 'prompt_config'")
    size, context = cfg.get("crop_size"), cfg.get("context")
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise bad(f"prompt_config.crop_size must be an int >= 16, got {size!r}")
    if not isinstance(context, (int, float)) or isinstance(context, bool) or not context >= 0:
        raise bad(f"prompt_config.context must be a number >= 0, got {context!r}")
    return list(PROMPT_GRAPH_NAMES)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(path: str | Path, *, backend: str | None = None, verify_files: bool = True, kind: str = "vos"
                  ) -> tuple[dict[str, Any], Path]:
    """Read and check the manifest of an export folder (or the path of its ``manifest.json``).

    Args:
        backend: required backend, or None.
        verify_files: also check that every graph file exists and has the recorded sha256.
        kind: ``"vos"`` or ``"prompt"`` (see :func:`validate_manifest`).
    Returns:
        (manifest, export folder).
    Raises:
        InputError: no manifest, invalid JSON, wrong format/version/backend, missing or modified graph files.
    """
    p = Path(path)
    mpath = p / MANIFEST_NAME if p.is_dir() else p
    if not mpath.is_file():
        raise InputError(f"{p} is not an rdevos export: {mpath.name} not found (create one with `rdevos export`)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{mpath} is not valid JSON: {e}") from e
    validate_manifest(manifest, backend=backend, source=str(mpath), kind=kind)
    folder = mpath.parent
    if verify_files:
        for name, g in manifest["graphs"].items():
            f = folder / g["file"]
            if not f.is_file():
                raise InputError(f"{mpath}: graph file {f} of {name!r} is missing")
            if g.get("sha256") and file_sha256(f) != g["sha256"]:
                raise InputError(f"{mpath}: graph file {f.name} does not match the manifest (sha256 differs); "
                                 "it was replaced or modified after the export; re-export the model")
    return manifest, folder


# ---------------------------------------------------------------------------------------------------- preprocessing
def to_rgb(image: object) -> np.ndarray:
    """PIL image, (H, W, 3|4) or (H, W) array -> (3, H, W) float32 in [0, 1] (uint8 is divided by 255)."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = np.asarray(image.convert("RGB"))  # type: ignore[attr-defined]
    if not isinstance(image, np.ndarray):
        raise InputError(f"unsupported frame type {type(image).__name__}; give a PIL image or an HxWx3 array")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"a frame must be an HxWx3 RGB array, got shape {image.shape}")
    chw = image[:, :, :3].transpose(2, 0, 1)
    if image.dtype == np.uint8:
        return chw.astype(np.float32) / np.float32(255)
    return chw.astype(np.float32)


def resized_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """torchvision ``Resize(int)`` rule: short side to ``short_side``, long side truncated proportionally."""
    if short_side is None:
        return height, width
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


@functools.lru_cache(maxsize=64)
def interp_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) float32 matrix of torch's 1-D ``bicubic`` (a=-0.75) or ``bilinear`` resize, align_corners=False.

    Source positions and weights are float32 with torch's clamps, as in its CPU kernels; the position is rounded
    once (exact product in float64, then float32), like the fused multiply-add torch is compiled to. That matches
    ``F.interpolate`` to ~1e-6 (bilinear: 1 ulp); plain float32 arithmetic is off by up to ~4e-5 at 480p.
    """
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    dst = np.arange(n_out)
    src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(f32)
    if mode == "bilinear":
        src = np.maximum(src, f32(0))
    idx = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    t = np.clip(src - idx.astype(f32), f32(0), f32(1))
    m = np.zeros((n_out, n_in), np.float64)
    if mode == "bilinear":
        np.add.at(m, (dst, idx), f32(1) - t)
        np.add.at(m, (dst, np.minimum(idx + 1, n_in - 1)), t)
    elif mode == "bicubic":
        a = f32(-0.75)

        def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
            return ((a + 2) * x - (a + 3)) * x * x + 1

        def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

        one = f32(1)
        for off, wgt in zip((-1, 0, 1, 2), (far(t + one), near(t), near(one - t), far(f32(2) - t))):
            np.add.at(m, (dst, np.clip(idx + off, 0, n_in - 1)), wgt)
    else:
        raise ValueError(f"unknown interpolation mode {mode!r}")
    return m.astype(np.float32)


def resize(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize the last two axes of a float32 array (torch ``interpolate`` semantics, no antialias)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    out = np.matmul(interp_matrix(h, size[0], mode), x) if h != size[0] else x
    return np.matmul(out, interp_matrix(w, size[1], mode).T) if w != size[1] else out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # torch's legacy "nearest": floor(dst * (float)in/out) computed in float32, clamped.
    if n_in == n_out:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Legacy-nearest resize of an (H, W) label map."""
    h, w = labels.shape
    if (h, w) == tuple(size):
        return labels
    return labels[_nearest_index(h, size[0])][:, _nearest_index(w, size[1])]


def pad_divide_by(x: np.ndarray, d: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Zero-pad the last two axes to multiples of ``d`` (left/top get floor(diff/2)); returns (array, pad)."""
    h, w = x.shape[-2:]
    dh, dw = (-h) % d, (-w) % d
    pad = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
    if dh == 0 and dw == 0:
        return x, pad
    widths = [(0, 0)] * (x.ndim - 2) + [(pad[2], pad[3]), (pad[0], pad[1])]
    return np.pad(x, widths), pad


def unpad(x: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


def aggregate(prob: np.ndarray) -> np.ndarray:
    """Soft aggregation: (K, H, W) object probabilities -> (K+1, H, W), channel 0 = background."""
    bg = np.prod(1 - prob, axis=0, keepdims=True)
    p = np.clip(np.concatenate([bg, prob], axis=0), np.float32(1e-7), np.float32(1 - 1e-7))
    logits = np.log(p / (1 - p))
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- memory
class _Bank:
    """Numpy twin of :class:`rdevos.inference.memory.MemoryBank`: keys (1, Ck, 1, h, w), values (1, K, Cv, 1, h, w)."""

    def __init__(self, mode: str, key: np.ndarray, value: np.ndarray) -> None:
        self.mode = mode
        self.gt_key, self.gt_value = key, value
        self.rde_key: np.ndarray | None = None
        self.rde_value: np.ndarray | None = None
        self.last_key: np.ndarray | None = None
        self.last_value: np.ndarray | None = None
        self._cached: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_objects(self) -> int:
        return int(self.gt_value.shape[1])

    def add(self, key: np.ndarray, value: np.ndarray,
            compress: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None) -> None:
        self._cached = None
        self.last_key = self.last_value = None
        if self.mode in _COMPRESS_MODES:
            if compress is None:
                raise InputError(f"memory mode {self.mode!r} needs the compress graph, which this export lacks")
            prev_k = self.gt_key if self.rde_key is None else self.rde_key
            prev_v = self.gt_value if self.rde_value is None else self.rde_value
            self.rde_key, self.rde_value = compress(np.concatenate([prev_k, key.astype(prev_k.dtype)], axis=2),
                                                    np.concatenate([prev_v, value.astype(prev_v.dtype)], axis=3))
        if self.mode in _LAST_MODES:
            self.last_key, self.last_value = key, value

    def frames(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        gk, gv = self.gt_key, self.gt_value
        mk = gk if self.rde_key is None else self.rde_key
        mv = gv if self.rde_value is None else self.rde_value
        lk, lv = self.last_key, self.last_value
        has_last = lk is not None and lv is not None
        mode = self.mode
        if mode == "two-frames-compress":
            return ([mk, lk, gk, gk], [mv, lv, gv, gv]) if has_last else ([mk, gk], [mv, gv])  # type: ignore[list-item]
        if mode == "gt-compress":
            return [mk, gk], [mv, gv]
        if mode == "last-compress":
            return ([mk, lk], [mv, lv]) if has_last else ([mk], [mv])  # type: ignore[list-item]
        if mode == "compress":
            return [mk], [mv]
        if mode == "two-frames":
            return ([lk, gk, gk], [lv, gv, gv]) if has_last else ([gk], [gv])  # type: ignore[list-item]
        if mode == "last":
            return ([lk], [lv]) if has_last else ([gk], [gv])  # type: ignore[list-item]
        return [gk], [gv]

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """mem_key (1, Ck, N) T-major, mem_value (1, N, K*Cv) entry-major; rebuilt only after a memory update."""
        if self._cached is None:
            keys, values = self.frames()
            k = np.concatenate(keys, axis=2)
            v = np.concatenate(values, axis=3)  # 1, K, Cv, T, h, w
            mk = np.ascontiguousarray(k.reshape(1, k.shape[1], -1))
            mv = np.ascontiguousarray(v.reshape(1, v.shape[1] * v.shape[2], -1).transpose(0, 2, 1))
            self._cached = (mk, mv)
        return self._cached

    def nbytes(self) -> int:
        ts = [self.gt_key, self.gt_value, self.rde_key, self.rde_value, self.last_key, self.last_value]
        return sum(int(t.nbytes) for t in ts if t is not None)


@dataclass
class _Group:
    ids: list[int]
    bank: _Bank


# ---------------------------------------------------------------------------------------------------- engine
class ExportedEngine:
    """The streaming engine over exported graphs; backends supply ``run(graph, feeds) -> outputs``.

    Args:
        manifest: a validated export manifest.
        run: calls one graph with numpy inputs (named as in the manifest) and returns its outputs in manifest order.
        top_k, mem_every: override the manifest's inference settings (the graphs do not depend on them).
    """

    def __init__(self, manifest: Mapping[str, Any], run: Runner, *, top_k: int | None = None,
                 mem_every: int | None = None) -> None:
        self.manifest = dict(manifest)
        inf = manifest["inference"]
        self.top_k = int(top_k if top_k is not None else inf["top_k"])
        self.mem_every = int(mem_every if mem_every is not None else inf["mem_every"])
        if self.top_k < 1 or self.mem_every < 1:
            raise InputError(f"top_k and mem_every must be >= 1, got {self.top_k}, {self.mem_every}")
        self.memory_mode: str = inf["memory_mode"]
        self.schedule: str = inf["schedule"]
        self.resolution: int | None = inf["resolution"]
        pre = manifest["preprocess"]
        self._mean = np.asarray(pre["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.asarray(pre["std"], np.float32).reshape(3, 1, 1)
        self._pad = int(pre["pad_multiple"])
        objects = manifest["objects"]
        self.fixed_objects: int | None = None if objects == "dynamic" else int(objects)
        graphs = manifest["graphs"]
        self._inputs = {g: [(t["name"], np.dtype(t["dtype"])) for t in graphs[g]["inputs"]] for g in graphs}
        if "compress" not in graphs and self.memory_mode in _COMPRESS_MODES:
            raise InputError(f"memory mode {self.memory_mode!r} compresses memory, but this export has no compress "
                             "graph (single-object network)")
        self._run = run
        self._ids: list[int] = []
        self._groups: list[_Group] = []
        self._t = 0
        self._last_mem_t = 0
        self.memory_updated = False

    # ----------------------------------------------------------------- state
    @property
    def object_ids(self) -> list[int]:
        """User ids of the tracked objects; output channel ``i + 1`` belongs to ``object_ids[i]``."""
        return list(self._ids)

    @property
    def frame_index(self) -> int:
        return self._t

    def memory_nbytes(self) -> int:
        return sum(g.bank.nbytes() for g in self._groups)

    def reset(self) -> None:
        """Forget all objects and memory (start a new video)."""
        self._ids.clear()
        self._groups.clear()
        self._t = 0
        self._last_mem_t = 0

    # ----------------------------------------------------------------- graph calls
    def _call(self, graph: str, **feeds: np.ndarray) -> list[np.ndarray]:
        cast = {name: np.ascontiguousarray(feeds[name], dtype=dt) for name, dt in self._inputs[graph]}
        return self._run(graph, cast)

    def _compress(self, key: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, v = self._call("compress", key=key, value=value)
        return k, v

    def _segment(self, feats: list[np.ndarray]) -> np.ndarray:
        key, f16_thin, _, f8, f4 = feats
        probs = []
        for g in self._groups:
            mk, mv = g.bank.stacked()
            top_k = np.array(min(self.top_k, mk.shape[2]), np.int64)
            probs.append(self._call("segment", mem_key=mk, mem_value=mv, key=key, f16_thin=f16_thin, f8=f8, f4=f4,
                                    top_k=top_k)[0])
        prob = np.concatenate(probs, axis=0).astype(np.float32)
        inv = channel_order([g.ids for g in self._groups], self._ids)
        if inv is not None:
            prob = prob[np.asarray(inv, np.int64)]
        return prob

    def _add_memory(self, key: np.ndarray, values: np.ndarray, new_ids: list[int]) -> None:
        key5 = key[:, :, None]  # 1, Ck, 1, h, w
        compress = self._compress if "compress" in self._inputs else None
        for g in self._groups:
            idx = [self._ids.index(i) for i in g.ids]
            g.bank.add(key5, values[:, idx][:, :, :, None], compress)
        if new_ids:
            idx = [self._ids.index(i) for i in new_ids]
            self._groups.append(_Group(list(new_ids), _Bank(self.memory_mode, key5, values[:, idx][:, :, :, None])))

    def _parse_mask(self, mask: object, size: tuple[int, int], objects: Iterable[int] | None
                    ) -> tuple[np.ndarray, list[int]]:
        arr = np.asarray(mask)
        if arr.ndim != 2:
            raise InputError(f"a mask must be an HxW label map, got shape {arr.shape}"
                             + (f" (PIL mode {mask.mode!r}; use a palette 'P' or greyscale 'L' image)"
                                if hasattr(mask, "mode") else ""))
        if arr.dtype.kind not in "uib":
            raise InputError(f"a mask must hold integer labels, got dtype {arr.dtype}")
        labels = arr.astype(np.int64)
        if labels.shape != tuple(size):
            raise InputError(f"mask size {labels.shape[0]}x{labels.shape[1]} (HxW) differs from the frame size "
                             f"{size[0]}x{size[1]}")
        return labels, mask_object_ids(np.unique(labels).tolist(), objects)

    def _check_fixed_objects(self, new_ids: list[int]) -> None:
        k = self.fixed_objects
        if k is None or not new_ids:
            return
        if self._groups:
            raise InputError(f"this export has a fixed object count ({k}); objects {new_ids} added after the first "
                             "annotation need an export with --objects dynamic")
        if len(new_ids) != k:
            raise InputError(f"this export was made for exactly {k} object(s) (--objects {k}); the mask has "
                             f"{len(new_ids)}; re-export with --objects {len(new_ids)} or --objects dynamic")

    # ----------------------------------------------------------------- main entry
    def step(self, image: object, mask: object | None = None, *, objects: Iterable[int] | None = None,
             is_last: bool = False) -> np.ndarray:
        """Process the next frame (same contract as :meth:`InferenceEngine.step`).

        Args:
            image: RGB frame: PIL image or (H, W, 3) uint8 array (float arrays are taken as [0, 1]).
            mask: optional (H, W) label map of this frame (user ids; 0 = background).
            objects: ids in ``mask`` to use (default: every non-zero label).
            is_last: the video ends here, so the frame is not added to memory.
        Returns:
            (K+1, H, W) float32 probabilities at the input size; channel ``i + 1`` = ``object_ids[i]``.
        """
        rgb = to_rgb(image)
        h, w = rgb.shape[-2:]
        size = resized_size(h, w, self.resolution)
        x, pad = pad_divide_by(resize((rgb - self._mean) / self._std, size, "bicubic"), self._pad)
        x = x[None]
        labels = ids = None
        if mask is not None:
            labels, ids = self._parse_mask(mask, (h, w), objects)
            self._check_fixed_objects(new_object_ids(ids, self._ids))
        t = self._t
        self.memory_updated = False
        feats = self._call("key_encoder", image=x)
        key, f16 = feats[0], feats[2]
        k = len(self._ids)
        hp, wp = x.shape[-2:]
        obj_prob = self._segment(feats) if self._groups else np.zeros((k, hp, wp), np.float32)
        if labels is not None and ids is not None:
            new_ids = new_object_ids(ids, self._ids)
            self._ids += new_ids
            if new_ids:
                obj_prob = np.concatenate([obj_prob, np.zeros((len(new_ids), hp, wp), np.float32)], axis=0)
            lab, _ = pad_divide_by(resize_labels(labels, size), self._pad)
            given = np.stack([lab == i for i in ids]).astype(np.float32)
            obj_prob = np.where(given.sum(0) > 0.5, np.float32(0), obj_prob)
            obj_prob[[self._ids.index(i) for i in ids]] = given
            prob = aggregate(obj_prob)
            values = self._call("value_encoder", image=x, f16=f16, masks=prob[None, 1:])[0]
            self._add_memory(key, values, new_ids)
            self._last_mem_t = t
            self.memory_updated = True
        else:
            prob = aggregate(obj_prob) if k else np.ones((1, hp, wp), np.float32)
            if k and not is_last and memory_due(t, self._last_mem_t, self.mem_every, self.schedule):
                values = self._call("value_encoder", image=x, f16=f16, masks=prob[None, 1:])[0]
                self._add_memory(key, values, [])
                self._last_mem_t = t
                self.memory_updated = True
        self._t += 1
        prob = unpad(prob, pad)
        if prob.shape[-2:] != (h, w):
            prob = resize(np.ascontiguousarray(prob), (h, w), "bilinear")
        return prob

    def probs_to_labels(self, prob: np.ndarray) -> np.ndarray:
        """Argmax of :meth:`step` output mapped to user ids: (H, W) int64 (0 = background)."""
        lut = np.asarray([0, *self._ids], np.int64)
        return lut[prob.argmax(axis=0)]

    def run(self, frames: Iterable[object], mask: object, *, objects: Iterable[int] | None = None
            ) -> Iterator[np.ndarray]:
        """Annotate the first frame with ``mask`` and yield each frame's probabilities."""
        it = iter(frames)
        try:
            first = next(it)
        except StopIteration:
            raise InputError("the video has no frames") from None
        yield self.step(first, mask, objects=objects)
        prev = None
        for frame in it:
            if prev is not None:
                yield self.step(prev)
            prev = frame
        if prev is not None:
            yield self.step(prev, is_last=True)


class OnnxEngine(ExportedEngine):
    """Segment a video with an ONNX export (``rdevos export --format onnx``) on onnxruntime, without torch.

    Args:
        path: the export folder (or its ``manifest.json``).
        top_k, mem_every: override the manifest's settings.
        threads: onnxruntime intra-op threads per graph (default: onnxruntime's choice).
        providers: onnxruntime execution providers (default: ``["CPUExecutionProvider"]``).
        verify_files: check the graph files' sha256 against the manifest.
    Raises:
        MissingDependencyError: onnxruntime is not installed.
        InputError: not an ONNX export, or graphs that do not match the manifest.
    """

    def __init__(self, path: str | Path, *, top_k: int | None = None, mem_every: int | None = None,
                 threads: int | None = None, providers: list[str] | None = None, verify_files: bool = True) -> None:
        manifest, folder = load_manifest(path, backend="onnx", verify_files=verify_files)
        self.sessions, run = onnx_sessions(manifest, folder, threads=threads, providers=providers)
        super().__init__(manifest, run, top_k=top_k, mem_every=mem_every)
        logger.info("loaded ONNX export %s (%s, objects %s)", folder, manifest["precision"], manifest["objects"])


def onnx_sessions(manifest: Mapping[str, Any], folder: Path, *, threads: int | None = None,
                  providers: list[str] | None = None) -> tuple[dict[str, Any], Runner]:
    """onnxruntime sessions of an export's graphs (checked against the manifest) and a :data:`Runner` over them.

    Raises :class:`MissingDependencyError` without onnxruntime, :class:`InputError` for a graph that does not load
    or does not match the manifest.
    """
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    providers = providers or ["CPUExecutionProvider"]
    sessions: dict[str, Any] = {}
    for name, g in manifest["graphs"].items():
        try:
            sess = ort.InferenceSession(str(folder / g["file"]), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise InputError(f"onnxruntime cannot load {folder / g['file']}: {e}") from e
        _check_session(name, sess, g)
        sessions[name] = sess
    outputs = {n: [t["name"] for t in g["outputs"]] for n, g in manifest["graphs"].items()}

    def run(graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return list(sessions[graph].run(outputs[graph], dict(feeds)))

    logger.debug("onnxruntime sessions on %s", providers)
    return sessions, run


# ---------------------------------------------------------------------------------------------------- prompt model
def _prompt_encoding() -> Any:
    """The prompt geometry (:mod:`rdevos.prompt.encoding`, or its copy shipped beside a prompt-model export)."""
    if __name__.startswith("rdevos."):
        from rdevos.prompt import encoding
    else:
        import rdevos_prompt_encoding as encoding  # type: ignore[import-not-found,no-redef]
    return encoding


class ExportedPromptPredictor:
    """Box and/or clicks on one frame -> object mask, with an exported prompt model; the same contract, checks and
    geometry as :class:`rdevos.prompt.PromptPredictor` (so it also works with ``rdevos.prompt.prompts_to_labels``).

    Args:
        manifest: a validated prompt-model export manifest.
        run: calls the ``prompt`` graph with numpy inputs and returns its outputs.
        keep_clicked: for prompts without a box, keep only the connected parts that hold a positive click.
    """

    def __init__(self, manifest: Mapping[str, Any], run: Runner, *, keep_clicked: bool = True) -> None:
        self.manifest = dict(manifest)
        cfg = manifest["prompt_config"]
        self.size = int(cfg["crop_size"])
        self.context = float(cfg["context"])
        self.keep_clicked = keep_clicked
        self._inputs = [(t["name"], np.dtype(t["dtype"])) for t in manifest["graphs"]["prompt"]["inputs"]]
        self._run = run
        self._encoding = _prompt_encoding()

    def predict_probs(self, image: np.ndarray, box: Sequence[float] | None = None,
                      points: Sequence[Sequence[float | bool]] = (), prev_mask: np.ndarray | None = None
                      ) -> np.ndarray:
        """Object probability (H, W) float32 for ``image`` (H, W, 3) uint8 RGB; arguments as
        :meth:`rdevos.prompt.PromptPredictor.predict_probs`."""
        enc = self._encoding
        prep = enc.prepare_prompt(image, box, points, prev_mask, self.size, self.context)
        arrays = {"image": prep.crop[None], "prompts": prep.maps[None]}
        feeds = {name: np.ascontiguousarray(arrays[name], dtype=dt) for name, dt in self._inputs}
        prob = self._run("prompt", feeds)[0]
        return enc.finish_prompt(np.asarray(prob, np.float32)[0, 0], prep, self.keep_clicked)

    def predict(self, image: np.ndarray, box: Sequence[float] | None = None,
                points: Sequence[Sequence[float | bool]] = (), prev_mask: np.ndarray | None = None) -> np.ndarray:
        """Binary object mask (H, W) bool; arguments as in :meth:`predict_probs`."""
        return self.predict_probs(image, box, points, prev_mask) > 0.5


class OnnxPromptPredictor(ExportedPromptPredictor):
    """Prompt to mask with a prompt-model ONNX export (``rdevos export --prompt-model M --format onnx``) on
    onnxruntime, numpy and OpenCV, without torch.

    Args:
        path: the export folder (or its ``manifest.json``).
        threads, providers, verify_files: as :class:`OnnxEngine`.
        keep_clicked: as :class:`ExportedPromptPredictor`.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None,
                 verify_files: bool = True, keep_clicked: bool = True) -> None:
        manifest, folder = load_manifest(path, backend="onnx", verify_files=verify_files, kind="prompt")
        self.sessions, run = onnx_sessions(manifest, folder, threads=threads, providers=providers)
        super().__init__(manifest, run, keep_clicked=keep_clicked)
        logger.info("loaded ONNX prompt-model export %s (%s)", folder, manifest["precision"])


def _check_session(name: str, sess: Any, entry: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` if a loaded graph's inputs/outputs differ from the manifest's."""
    def sig(ts: Iterable[Any]) -> list[tuple[str, int, str]]:
        return [(t.name, len(t.shape), _ORT_TYPES.get(t.type, t.type)) for t in ts]

    want_in = [(t["name"], len(t["shape"]), t["dtype"]) for t in entry["inputs"]]
    want_out = [(t["name"], len(t["shape"]), t["dtype"]) for t in entry["outputs"]]
    got_in, got_out = sig(sess.get_inputs()), sig(sess.get_outputs())
    if got_in != want_in or got_out != want_out:
        raise InputError(f"graph {name!r} ({entry['file']}) does not match the manifest: inputs {got_in} vs "
                         f"{want_in}, outputs {got_out} vs {want_out}; re-export the model")
