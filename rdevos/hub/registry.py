"""Named weights: where each comes from, its hash, architecture and licence."""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rdevos.config import ModelConfig
from rdevos.errors import ModelNotFoundError
from rdevos.hub.download import download_url, sha256_file

logger = logging.getLogger(__name__)

__all__ = ["WeightSpec", "REGISTRY", "PROMPT_REGISTRY", "DEFAULT_PROMPT_MODEL", "resolve_prompt_weights", "DEFAULT_MODEL", "LITE_CONFIG", "LITE2_CONFIG", "MODELSCOPE_ID", "resolve_weights",
           "list_models"]

MODELSCOPE_ID = "damo/cv_rdevos_video-object-segmentation"

#: Architecture of the embedded default model (configs/lite-davis.yaml).
LITE_CONFIG = ModelConfig(key_block="basic", key_layers=(2, 2, 2), key_width=32, value_layers=(1, 1, 1),
                          value_width=16, key_dim=64, value_dim=128, decoder_dims=(64, 32), cbam_reduction=16,
                          rde_norm=True)
#: Architecture of rdevos-lite2 and rdevos-lite3 (configs/lite2-davis.yaml): ImageNet EfficientNet-Lite2 key encoder.
LITE2_CONFIG = ModelConfig(key_backbone="efficientnet-lite2", value_layers=(1, 1, 1), value_width=16, key_dim=64,
                           value_dim=128, decoder_dims=(64, 32), cbam_reduction=16, rde_norm=True)
#: The embedded default model (configs/lite3-davis.yaml): rdevos-lite2 trained further on multi-object material.
DEFAULT_MODEL = "rdevos-lite3"


@dataclass(frozen=True)
class WeightSpec:
    """Where a named model's weights come from.

    Exactly one of ``resource`` (a file shipped inside the package), ``url`` (http(s), cached) or
    ``modelscope_id`` (resolved with the optional ``modelscope`` package) is set.
    """

    name: str
    resource: str | None = None
    url: str | None = None
    modelscope_id: str | None = None
    sha256: str | None = None
    config: ModelConfig | None = None
    license: str = ""
    description: str = ""


REGISTRY: dict[str, WeightSpec] = {
    MODELSCOPE_ID: WeightSpec(
        name=MODELSCOPE_ID, modelscope_id=MODELSCOPE_ID, config=ModelConfig.official(),
        license="see the ModelScope model card",
        description="Official RDE-VOS weights (s012, YouTube-VOS 2019 val 83.3 J&F) from ModelScope."),
    DEFAULT_MODEL: WeightSpec(
        name=DEFAULT_MODEL, resource="assets/weights/rdevos_lite3.pt",
        sha256="f715438eec84316e0f6e1f70495cafe5763611794229b305770eb5243a3c1d7a",
        config=LITE2_CONFIG,
        license="CC BY-NC 4.0 (trained on DAVIS data); also trained on coco128-seg (COCO annotations CC BY 4.0, "
                "images under their Flickr terms, Ultralytics packaging GPL-3.0); EfficientNet-Lite2 ImageNet "
                "weights Apache-2.0",
        description="The default: rdevos-lite2 (same architecture, 4.1 M params) trained further by this project "
                    "on 22 DAVIS-2016 train sequences and 106 coco128-seg images with up to 3 objects per clip "
                    "(configs/lite3-davis.yaml); embedded."),
    "rdevos-lite2": WeightSpec(
        name="rdevos-lite2", resource="assets/weights/rdevos_lite2.pt",
        sha256="bf942b705df6993820dc20f49e238c250b925f2b98e46b50d840fb311f324c34",
        config=LITE2_CONFIG,
        license="CC BY-NC 4.0 (trained on DAVIS data); EfficientNet-Lite2 ImageNet weights Apache-2.0",
        description="The previous default: RDE-VOS with an ImageNet EfficientNet-Lite2 key encoder (4.1 M params), "
                    "trained by this project on 22 DAVIS-2016 train sequences (configs/lite2-davis.yaml); the "
                    "starting point of rdevos-lite3; embedded."),
    "rdevos-lite": WeightSpec(
        name="rdevos-lite", resource="assets/weights/rdevos_lite.pt",
        sha256="52a2592ac06e0cc3fd5c2f7b42805e1c12a957f22bedfd4b433dc2457b73f59f",
        config=LITE_CONFIG,
        license="CC BY-NC 4.0 (trained on DAVIS data)",
        description="An earlier default: small RDE-VOS (3.7 M params) trained from scratch on 25 DAVIS-2016 "
                    "train sequences (configs/lite-davis.yaml); kept for comparison; embedded."),
}

# Prompt-to-mask models (rdevos.prompt): box / clicks on one frame -> that frame's object mask.
DEFAULT_PROMPT_MODEL = "rdevos-prompt-lite2"
PROMPT_REGISTRY: dict[str, WeightSpec] = {
    DEFAULT_PROMPT_MODEL: WeightSpec(
        name=DEFAULT_PROMPT_MODEL, resource="assets/weights/rdevos_prompt_lite2.pt",
        sha256="3e74ba7ac9cc033cdaadc5d325ba8f1d2974a69ecc929554e854d6073384045c",
        license="CC BY-NC 4.0 (trained on DAVIS data); EfficientNet-Lite2 ImageNet weights Apache-2.0",
        description="The default prompt model: box and clicks to mask on an ImageNet EfficientNet-Lite2 trunk, "
                    "trained by this project on DAVIS-2016 train frames (scripts/train_prompt_model.py); embedded."),
}

_MODEL_ID = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def list_models() -> list[str]:
    """Names accepted by :func:`resolve_weights` besides paths and URLs."""
    return sorted(REGISTRY)


def _resource_path(spec: WeightSpec) -> Path:
    assert spec.resource is not None
    path = Path(str(importlib.resources.files("rdevos") / spec.resource))
    if not path.is_file():
        raise ModelNotFoundError(
            f"the embedded model {spec.name!r} is not included in this installation ({spec.resource} is missing). "
            "Pass a checkpoint explicitly: an official RDE-VOS .pth, a ModelScope model directory, or an rdevos "
            "checkpoint (model=PATH / --model PATH).")
    if spec.sha256 and sha256_file(path) != spec.sha256:
        raise ModelNotFoundError(f"the embedded model file {path} does not match its sha256 {spec.sha256}; "
                                 "the installation is corrupt, reinstall rdevos")
    return path


def _modelscope_snapshot(model_id: str) -> Path:
    try:
        from modelscope.hub.snapshot_download import snapshot_download  # type: ignore[import-not-found]
    except ImportError:
        raise ModelNotFoundError(
            f"{model_id!r} looks like a ModelScope model id, but the optional 'modelscope' package is not installed. "
            "Install it with `pip install 'rdevos[modelscope]'`, or download the model directory (it holds "
            "pytorch_model.pt and configuration.json) yourself and pass its path.") from None
    try:
        return Path(snapshot_download(model_id))
    except Exception as e:  # network errors, unknown ids
        raise ModelNotFoundError(f"ModelScope could not fetch {model_id!r}: {e}") from e


def resolve_weights(model: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """Turn a model argument into a local checkpoint path (file or ModelScope directory).

    Accepts: ``None`` (the embedded default model), a local file or directory, a registry name
    (:func:`list_models`), an ``http(s)://`` URL (optionally ``#sha256=<hex>``), or a ModelScope model id.
    """
    if model is None:
        model = DEFAULT_MODEL
    s = os.fspath(model)
    if os.path.exists(s):
        return Path(s)
    spec = REGISTRY.get(s)
    if spec is not None:
        if spec.resource:
            return _resource_path(spec)
        if spec.url:
            return download_url(spec.url, spec.sha256, progress=progress)
        if spec.modelscope_id:
            return _modelscope_snapshot(spec.modelscope_id)
    if s.startswith(("http://", "https://")):
        return download_url(s, progress=progress)
    if _MODEL_ID.match(s):
        return _modelscope_snapshot(s)
    raise ModelNotFoundError(f"model {s!r} is not a file, directory, URL, ModelScope id or known name "
                             f"({', '.join(list_models())})")


def resolve_prompt_weights(model: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """Like :func:`resolve_weights`, for prompt-to-mask models: ``None`` (the embedded default), a path, a name of
    :data:`PROMPT_REGISTRY` or an ``http(s)://`` URL (optionally ``#sha256=<hex>``)."""
    s = os.fspath(DEFAULT_PROMPT_MODEL if model is None else model)
    if os.path.exists(s):
        return Path(s)
    spec = PROMPT_REGISTRY.get(s)
    if spec is not None and spec.resource:
        return _resource_path(spec)
    if s.startswith(("http://", "https://")):
        return download_url(s, progress=progress)
    raise ModelNotFoundError(f"prompt model {s!r} is not a file, URL or known name ({', '.join(sorted(PROMPT_REGISTRY))})")
