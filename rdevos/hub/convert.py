"""The one place that knows checkpoint formats: detection, unwrapping, key mapping, strict loading, saving.

Formats:
- ``official``: plain state dict of the official RDE-VOS code (435 keys, no prefix); also the wrapped forms
  training scripts write (``module.`` prefixes, ``{"network": ...}`` resume files, ``{"state_dict": ...}``).
- ``modelscope``: a ModelScope model directory holding ``pytorch_model.pt`` (same keys as official) and
  ``configuration.json``.
- ``rdevos``: ``{"format": "rdevos", "version": 1, "config": ModelConfig dict, "state_dict": ...}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rdevos.config import InferenceConfig, ModelConfig
from rdevos.errors import CheckpointError
from rdevos.io.atomic import atomic_path
from rdevos.model.network import RDEVOS

logger = logging.getLogger(__name__)

__all__ = ["load_state", "load_network", "save_checkpoint", "save_modelscope_dir", "infer_config", "load_weights",
           "load_backbone", "LoadReport", "read_tensors",
           "MODELSCOPE_WEIGHTS", "MODELSCOPE_CONFIG"]

MODELSCOPE_WEIGHTS = "pytorch_model.pt"
MODELSCOPE_CONFIG = "configuration.json"
FORMAT_VERSION = 1


def _load_failure(exc: BaseException) -> str:
    """What ``torch.load(..., weights_only=True)`` failing with ``exc`` means, in one line (torch's own message is
    several lines of advice, among them to load with ``weights_only=False``, which rdevos never does)."""
    text = str(exc)
    glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if glob:
        return (f"it stores a Python object ({glob.group(1)}) besides tensors; rdevos reads only tensors and plain "
                "values (weights_only=True): save the weights alone, e.g. torch.save(model.state_dict(), path)")
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if unpickler or isinstance(exc, pickle.UnpicklingError):
        detail = unpickler.group(1).strip() if unpickler else type(exc).__name__
        return (f"not a file of tensors (rdevos reads checkpoints with torch.load(weights_only=True), which stops "
                f"at: {detail.rstrip('.')})")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if "zip archive" in first or "PytorchStreamReader" in first:
        return f"corrupt or truncated file ({first.split('. ')[0].rstrip('.')})"
    return f"not a PyTorch checkpoint ({type(exc).__name__}: {first[:200]})" if first else \
        f"not a PyTorch checkpoint ({type(exc).__name__})"


def read_tensors(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: the one way rdevos reads a weights file.

    Args:
        path: the file.
        what: how to call it in messages (``"checkpoint"``, ``"backbone weights"``, ...).

    Returns:
        the loaded object (tensors, containers of tensors and plain values).

    Raises:
        CheckpointError: a missing, corrupt or non-tensor file, in one line that names it.
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise beside the error that follows
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{what} {path} is a folder, not a file") from None
    except Exception as e:  # corrupt zip, pickle with disallowed globals, truncated file ...
        raise CheckpointError(f"cannot read {what} {path}: {_load_failure(e)}") from e


def _strip_prefix(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig | None, str]:
    """Return (state_dict, config or None, format name)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    if obj.get("format") == "rdevos":
        version = obj.get("version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: rdevos checkpoint version {version} is not supported (expected "
                                  f"{FORMAT_VERSION}); upgrade rdevos")
        try:
            config = ModelConfig.from_dict(dict(obj["config"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: invalid model config in rdevos checkpoint: {e}") from e
        return _strip_prefix(obj["state_dict"]), config, "rdevos"
    for wrapper in ("network", "state_dict", "model", "net"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return _strip_prefix(inner), None, f"official (wrapped in {wrapper!r})"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_prefix(obj), None, "official"
    raise CheckpointError(f"{path}: unrecognised checkpoint layout; top-level keys: {list(obj)[:8]}")


def load_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], ModelConfig | None, str]:
    """Read a checkpoint file or ModelScope model directory (``weights_only=True``).

    Returns:
        (state_dict without ``module.`` prefixes, the stored ModelConfig or None, the detected format name).
    """
    return _load_state(path)[:3]  # type: ignore[return-value]


def _inference_defaults(obj: Any, path: Path) -> dict[str, Any]:
    """The ``inference`` entry of an rdevos checkpoint (recommended InferenceConfig fields), validated."""
    if not isinstance(obj, Mapping) or obj.get("format") != "rdevos" or not obj.get("inference"):
        return {}
    return _check_inference(obj["inference"], path)


def _check_inference(d: Any, path: Path) -> dict[str, Any]:
    """Validate recommended inference settings: InferenceConfig fields except precision, with valid values."""
    known = {f.name for f in dataclasses.fields(InferenceConfig)} - {"precision"}
    if not isinstance(d, Mapping) or set(d) - known:
        raise CheckpointError(f"{path}: invalid 'inference' entry {d!r}; allowed keys: {sorted(known)}")
    try:
        InferenceConfig().replace(**d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid 'inference' entry {dict(d)}: {e}") from e
    return dict(d)


def _load_state(path: str | os.PathLike[str]
                ) -> tuple[dict[str, torch.Tensor], ModelConfig | None, str, dict[str, Any]]:
    """:func:`load_state` plus the checkpoint's recommended inference settings."""
    p = Path(path)
    if p.is_dir():
        weights = p / MODELSCOPE_WEIGHTS
        if not weights.is_file():
            cands = sorted([*p.glob("*.pth"), *p.glob("*.pt")])
            if len(cands) != 1:
                raise CheckpointError(f"{p} is a directory without {MODELSCOPE_WEIGHTS} (ModelScope layout) and "
                                      f"not exactly one .pth/.pt file (found {[c.name for c in cands]})")
            weights = cands[0]
        obj = read_tensors(weights)
        sd, config, fmt = _unwrap(obj, weights)
        inference = _inference_defaults(obj, weights)
        cfg_file = p / MODELSCOPE_CONFIG
        if cfg_file.is_file():
            try:
                meta = json.loads(cfg_file.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from e
            task = meta.get("task")
            if task not in (None, "video-object-segmentation"):
                raise CheckpointError(f"{p} is a ModelScope model for task {task!r}, not video-object-segmentation")
            if config is None and isinstance(meta.get("rdevos_config"), dict):
                config = ModelConfig.from_dict(meta["rdevos_config"])
            fmt = "modelscope" if fmt.startswith("official") else fmt
        return sd, config, fmt, inference
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    obj = read_tensors(p)
    return (*_unwrap(obj, p), _inference_defaults(obj, p))


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(sd: Mapping[str, torch.Tensor]) -> ModelConfig:
    """Read the architecture back from tensor shapes (only for legacy files without a stored config)."""
    try:
        bottleneck = "key_encoder.res2.0.conv3.weight" in sd
        conv1 = sd["value_encoder.conv1.weight"]
        return ModelConfig(
            key_block="bottleneck" if bottleneck else "basic",
            key_layers=(_count(sd, r"key_encoder\.res2\.(\d+)\."), _count(sd, r"key_encoder\.layer2\.(\d+)\."),
                        _count(sd, r"key_encoder\.layer3\.(\d+)\.")),
            key_width=int(sd["key_encoder.conv1.weight"].shape[0]),
            value_layers=(_count(sd, r"value_encoder\.layer1\.(\d+)\."),
                          _count(sd, r"value_encoder\.layer2\.(\d+)\."),
                          _count(sd, r"value_encoder\.layer3\.(\d+)\.")),
            value_width=int(conv1.shape[0]),
            key_dim=int(sd["key_proj.key_proj.weight"].shape[0]),
            value_dim=int(sd["key_comp.weight"].shape[0]),
            decoder_dims=(int(sd["decoder.up_16_8.out_conv.conv2.weight"].shape[0]),
                          int(sd["decoder.up_8_4.out_conv.conv2.weight"].shape[0])),
            cbam_reduction=max(1, int(sd["value_encoder.fuser.attention.ChannelGate.mlp.3.weight"].shape[0])
                               // int(sd["value_encoder.fuser.attention.ChannelGate.mlp.1.weight"].shape[0])),
            single_object=int(conv1.shape[1]) == 4,
        )
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot infer an RDE-VOS architecture from this state dict (missing or odd key: {e}); "
                              f"first keys: {list(sd)[:5]}") from e


def _mismatch_report(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], fmt: str, source: str) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = [f"checkpoint {source} (detected format: {fmt}) does not match the architecture: "
             f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} wrong shape"]
    if missing:
        parts.append("missing: " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        parts.append("unexpected: " + ", ".join(unexpected[:6]) + (" ..." if len(unexpected) > 6 else ""))
    if shapes:
        parts.append("wrong shape: " + ", ".join(shapes[:4]) + (" ..." if len(shapes) > 4 else ""))
    return "; ".join(parts)  # one line: the CLI's error line


def load_network(path: str | os.PathLike[str], config: ModelConfig | None = None) -> RDEVOS:
    """Build the network for a checkpoint and load its weights strictly (CPU, eval mode).

    Args:
        path: checkpoint file (official / wrapped / rdevos) or ModelScope model directory.
        config: architecture to build; default: the stored config, else inferred from the shapes (official files
            give the official architecture).
    Raises:
        CheckpointError: unreadable file, unknown layout, or keys/shapes that do not match (the message lists them).
    """
    sd, stored, fmt, inference = _load_state(path)
    config = config or stored or infer_config(sd)
    model = RDEVOS(config)
    model.inference_defaults = inference
    report = _mismatch_report(model, sd, fmt, str(path))
    if report:
        raise CheckpointError(report)
    model.load_state_dict(sd, strict=True)
    logger.info("loaded %s checkpoint %s", fmt, path)
    return model.eval()


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(model: RDEVOS, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None,
                    inference: Mapping[str, Any] | None = None) -> Path:
    """Write the rdevos format (weights + architecture config; plain types only, loadable with weights_only).

    Args:
        inference: recommended inference settings (InferenceConfig fields except precision, e.g. the training
            resolution); default: ``model.inference_defaults``.
    """
    obj: dict[str, Any] = {"format": "rdevos", "version": FORMAT_VERSION, "config": model.config.to_dict(),
                           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    inference = dict(model.inference_defaults if inference is None else inference)
    if inference:
        obj["inference"] = _check_inference(inference, Path(path))
    if extra:
        obj["extra"] = dict(extra)
    p = Path(path)
    _atomic_save(obj, p)
    return p


def save_modelscope_dir(model: RDEVOS, directory: str | os.PathLike[str]) -> Path:
    """Write a ModelScope model directory (``pytorch_model.pt`` plain state dict + ``configuration.json``)."""
    d = Path(directory)
    _atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, d / MODELSCOPE_WEIGHTS)
    meta: dict[str, Any] = {"framework": "pytorch", "task": "video-object-segmentation",
                            "model": {"type": "video-object-segmentation"},
                            "pipeline": {"type": "video-object-segmentation"}}
    if model.config != ModelConfig():
        meta["rdevos_config"] = model.config.to_dict()
    (d / MODELSCOPE_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return d


# ------------------------------------------------------------------------------------------------ training
# Loading weights into a network being trained: conversions between stage-0 and multi-object checkpoints, and
# ImageNet ResNet backbones (used by rdevos.train; every conversion is reported, never silent).
@dataclass
class LoadReport:
    """What :func:`load_weights` changed to make a checkpoint fit (empty lists: an exact fit)."""

    source: str
    format: str
    padded: list[str]
    trimmed: list[str]
    initialised: list[str]  #: model keys absent from the checkpoint, left at their fresh init
    dropped: list[str]  #: checkpoint keys the model does not have

    def summary(self) -> str:
        parts = []
        if self.padded:
            parts.append(f"padded input channels of {self.padded} (orthogonal init, seeded)")
        if self.trimmed:
            parts.append(f"dropped input channels of {self.trimmed}")
        if self.initialised:
            parts.append(f"{len(self.initialised)} keys not in the checkpoint kept their fresh init "
                         f"({_prefixes(self.initialised)})")
        if self.dropped:
            parts.append(f"{len(self.dropped)} checkpoint keys unused ({_prefixes(self.dropped)})")
        return "; ".join(parts) or "exact fit"


def _prefixes(keys: list[str]) -> str:
    return ", ".join(sorted({k.split(".")[0] + "." + k.split(".")[1] if k.count(".") > 1 else k for k in keys})[:6])


_CONVERTIBLE = ("mem_compress.",)  # the only module a stage-0 (single-object) checkpoint lacks


def load_weights(net: RDEVOS, path: str | os.PathLike[str], *, seed: int = 0) -> LoadReport:
    """Load official / ModelScope / rdevos weights into ``net``, converting between stage-0 and multi-object.

    Conversions (each is reported in the log and the returned report, never silent):

    * stage-0 -> multi-object: ``value_encoder.conv1.weight`` [64, 4, 7, 7] gets a fifth input channel with an
      orthogonal init (the reference does the same, unseeded; we seed it with ``seed``); ``mem_compress.*`` is
      missing and keeps the network's fresh init;
    * multi-object -> stage-0: the "others" channel is dropped and ``mem_compress.*`` is ignored.

    Any other mismatch raises :class:`~rdevos.errors.CheckpointError` listing the keys.
    """
    sd, _, fmt = load_state(path)
    own = net.state_dict()
    sd = dict(sd)
    padded, trimmed = [], []
    k = "value_encoder.conv1.weight"
    if k in sd and k in own and sd[k].shape != own[k].shape and sd[k].ndim == 4 and \
            sd[k].shape[0] == own[k].shape[0] and sd[k].shape[2:] == own[k].shape[2:]:
        have, want = sd[k].shape[1], own[k].shape[1]
        if have < want:
            g = torch.Generator().manual_seed(seed)
            pad = torch.empty(own[k].shape[0], want - have, *own[k].shape[2:])
            nn.init.orthogonal_(pad, generator=g)
            sd[k] = torch.cat([sd[k].float(), pad], dim=1).to(sd[k].dtype)
            padded.append(k)
        else:
            sd[k] = sd[k][:, :want].clone()
            trimmed.append(k)
    missing = [m for m in own if m not in sd]
    unexpected = [u for u in sd if u not in own]
    shapes = [s for s in own if s in sd and tuple(sd[s].shape) != tuple(own[s].shape)]
    bad_missing = [m for m in missing if not m.startswith(_CONVERTIBLE)]
    bad_unexpected = [u for u in unexpected if not u.startswith(_CONVERTIBLE)]
    if bad_missing or bad_unexpected or shapes:
        parts = [f"cannot load {path} (format {fmt}) into the {_arch(net.config)} network: "
                 f"{len(bad_missing)} missing, {len(bad_unexpected)} unexpected, {len(shapes)} wrong shape"]
        if bad_missing:
            parts.append("missing: " + ", ".join(bad_missing[:6]))
        if bad_unexpected:
            parts.append("unexpected: " + ", ".join(bad_unexpected[:6]))
        if shapes:
            parts.append("wrong shape: " + ", ".join(f"{s} (checkpoint {tuple(sd[s].shape)}, model "
                                                     f"{tuple(own[s].shape)})" for s in shapes[:4]))
        raise CheckpointError("; ".join(parts))  # one line: the CLI's error line
    merged = {m: (sd[m] if m in sd else own[m]) for m in own}
    net.load_state_dict(merged, strict=True)
    report = LoadReport(str(path), fmt, padded, trimmed, missing, unexpected)
    (logger.warning if (padded or trimmed or missing or unexpected) else logger.info)(
        "loaded %s weights from %s: %s", fmt, path, report.summary())
    return report


def _arch(cfg: ModelConfig) -> str:
    return ("single-object " if cfg.single_object else "multi-object ") + \
        ("official" if cfg == ModelConfig(single_object=cfg.single_object) else "custom")


def load_backbone(encoder: nn.Module, path: str | os.PathLike[str], *, seed: int = 0) -> list[str]:
    """Load a torchvision-layout ResNet state dict (e.g. ImageNet ``resnet50``/``resnet18`` weights) into the key or
    value encoder (``layer1`` -> ``res2`` for the key encoder; extra input channels of ``conv1`` padded with a seeded
    orthogonal init, as the reference's ``mod_resnet.load_weights_sequential``).

    Returns:
        the encoder keys that kept their init (e.g. conv biases the torchvision ResNet lacks; the fuser).
    """
    sd = read_tensors(path, "backbone weights")
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    own = encoder.state_dict()
    renamed = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if k.startswith(("layer4.", "fc.")):
            continue
        if "res2.0.conv1.weight" in own and k.startswith("layer1."):
            k = "res2." + k[len("layer1."):]
        renamed[k] = v
    loaded, skipped = {}, []
    for k, v in renamed.items():
        if k not in own:
            skipped.append(k)
            continue
        if k == "conv1.weight" and v.shape[1] < own[k].shape[1] and v.shape[0] == own[k].shape[0]:
            pad = torch.empty(v.shape[0], own[k].shape[1] - v.shape[1], *v.shape[2:])
            nn.init.orthogonal_(pad, generator=torch.Generator().manual_seed(seed))
            v = torch.cat([v, pad], dim=1)
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"backbone {path}: {k} has shape {tuple(v.shape)}, the encoder needs "
                                  f"{tuple(own[k].shape)} (wrong ResNet depth/width for this ModelConfig?)")
        loaded[k] = v
    if not loaded:
        raise CheckpointError(f"backbone {path}: no key matches a torchvision ResNet layout")
    kept = [k for k in own if k not in loaded]
    encoder.load_state_dict({**own, **loaded}, strict=True)
    logger.warning("loaded backbone %s: %d tensors; %d kept their init (%s); %d ignored", path, len(loaded),
                   len(kept), ", ".join(kept[:4]) + (" ..." if len(kept) > 4 else ""), len(skipped))
    return kept
