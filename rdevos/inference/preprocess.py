"""Frame and mask preprocessing exactly as the official/ModelScope code does it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rdevos.errors import InputError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_image_tensor", "normalize", "resized_size", "resize_image",
           "resize_labels", "pad_divide_by", "unpad"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_image_tensor(image: object, device: torch.device) -> torch.Tensor:
    """Convert an RGB frame to a (3, H, W) float32 tensor in [0, 1] on ``device``.

    Accepts a PIL image (converted to RGB), an (H, W, 3) uint8 array, or a (3, H, W) tensor (uint8, or float
    in [0, 1]).
    """
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = np.asarray(image.convert("RGB"))  # type: ignore[attr-defined]
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise InputError(f"a frame must be an HxWx3 RGB array, got shape {image.shape}")
        arr = image[:, :, :3]
        arr = np.ascontiguousarray(arr) if arr.flags.writeable else arr.copy()
        t = torch.from_numpy(arr).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        t = image
        if t.ndim != 3 or t.shape[0] != 3:
            raise InputError(f"a frame tensor must have shape (3, H, W), got {tuple(t.shape)}")
    else:
        raise InputError(f"unsupported frame type {type(image).__name__}; give a PIL image, ndarray or tensor")
    t = t.to(device)
    return t.float().div_(255) if t.dtype == torch.uint8 else t.float()


def normalize(image: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of a (3, H, W) float image in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image - mean) / std


def resized_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """torchvision ``Resize(int)`` rule: short side to ``short_side``, long side truncated proportionally."""
    if short_side is None:
        return height, width
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize (no antialias, as torchvision <= 0.16 did for tensors) of a (C, H, W) float tensor."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False, antialias=False)[0]


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Legacy-nearest resize of an (H, W) integer label map (same result as resizing each one-hot channel)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].to(labels.dtype)


def pad_divide_by(x: torch.Tensor, d: int = 16) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two dims up to multiples of ``d``; left/top get floor(diff/2).

    Returns the padded tensor and the pad tuple (left, right, top, bottom).
    """
    h, w = x.shape[-2:]
    dh, dw = (-h) % d, (-w) % d
    pad = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
    if dh == 0 and dw == 0:
        return x, pad
    return F.pad(x, pad), pad


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_divide_by` on the last two dims."""
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]
