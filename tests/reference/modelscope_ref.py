"""Test-time harness around the reference RDE-VOS implementation (ModelScope port).

No reference code lives in this repository. The ``modelscope`` wheel (version pinned below, sha256-checked) is
fetched from PyPI at test time, only the video-object-segmentation files are extracted into a cache directory, and
they are imported in isolation:

* every ``modelscope.*`` / ``torchvision`` import in those files is redirected (on the import line only) to a private
  namespace ``_rdevos_ref_ms`` that holds either the extracted modules or tiny stubs, so neither a real ``modelscope``
  nor a real ``torchvision`` is needed, and nothing named ``modelscope``/``torchvision`` is put into ``sys.modules``;
* ``torchvision.models.resnet50(pretrained=False)`` is stubbed by the reference's own
  ``mod_resnet.resnet50(pretrained=False)`` (torchvision Bottleneck layout, ``bias=False``);
* ``torchvision.transforms`` is stubbed with exact tensor equivalents of ToTensor / Normalize / Resize(int) as used by
  the 2022 pipeline (torchvision <= 0.16, i.e. ``antialias=False`` for tensors).

All reference runs happen on CPU in fp32 under ``torch.inference_mode()`` (the net must be on CPU).

Environment variables:
    RDEVOS_REF_CACHE  cache directory (default ``~/.cache/rdevos-ref``)
    RDEVOS_REF_WHEEL  optional path to an already downloaded wheel (still sha256-checked; copied into the cache)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODELSCOPE_VERSION = "1.40.2"
WHEEL_NAME = f"modelscope-{MODELSCOPE_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "ea03e0ec4a73398a488d3d240cda4f0c5b62390377a134756d4074a3036cb909"
VOS_DIR = "modelscope/models/cv/video_object_segmentation/"
PIPELINE_FILE = "modelscope/pipelines/cv/video_object_segmentation_pipeline.py"
PIP_TIMEOUT_S = 300

#: private top-level package name under which the reference and its stubs are registered in sys.modules
NS = "_rdevos_ref_ms"

_VOS_PKG = f"{NS}.models.cv.video_object_segmentation"
# load order respects the intra-package imports
_VOS_MODULES = (
    "aggregate",
    "cbam",
    "mod_resnet",
    "modules",
    "network",
    "eval_network",
    "inference_memory_bank",
    "inference_core",
)

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent.parent
STATE_DICT_KEYS_FILE = Path(os.environ.get("RDEVOS_SHARED", _REPO.parent / "shared")) / "docs" / "rdevos-state-dict-keys.txt"


class ReferenceUnavailable(RuntimeError):
    """The reference wheel could not be obtained or verified (tests should skip with ``str(exc)``)."""


# ----------------------------------------------------------------------------------------------------------------------
# obtaining the wheel
# ----------------------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("RDEVOS_REF_CACHE", Path.home() / ".cache" / "rdevos-ref")).expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wanted(name: str) -> bool:
    return (name.startswith(VOS_DIR) and name.endswith(".py") and "/" not in name[len(VOS_DIR):]) or name == PIPELINE_FILE


def _download_wheel(cache: Path) -> Path:
    wheel = cache / WHEEL_NAME
    local = os.environ.get("RDEVOS_REF_WHEEL")
    if local:
        src = Path(local).expanduser()
        if not src.is_file():
            raise ReferenceUnavailable(f"RDEVOS_REF_WHEEL={local} is not a file")
        tmp = cache / (WHEEL_NAME + f".{os.getpid()}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, wheel)
        return wheel
    with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as tmpdir:
        cmd = [
            sys.executable, "-m", "pip", "download", f"modelscope=={MODELSCOPE_VERSION}", "--no-deps",
            "--only-binary=:all:", "--disable-pip-version-check", "-d", tmpdir,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ReferenceUnavailable(f"pip download of modelscope=={MODELSCOPE_VERSION} timed out after {PIP_TIMEOUT_S}s") from None
        except OSError as exc:
            raise ReferenceUnavailable(f"cannot run pip: {exc}") from None
        got = Path(tmpdir) / WHEEL_NAME
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise ReferenceUnavailable(
                f"pip download modelscope=={MODELSCOPE_VERSION} failed (rc={proc.returncode}): {' | '.join(tail)}")
        os.replace(got, wheel)
    return wheel


def get_reference_dir() -> Path:
    """Return ``<cache>/extracted``, holding ``modelscope/models/cv/video_object_segmentation/*.py`` and the pipeline.

    Downloads (``pip download``) and sha256-verifies the wheel when needed. Raises ReferenceUnavailable on failure.
    """
    cache = cache_dir()
    extracted = cache / "extracted"
    stamp = extracted / "WHEEL_SHA256"
    if stamp.is_file() and stamp.read_text().strip() == WHEEL_SHA256 and (extracted / PIPELINE_FILE).is_file():
        return extracted
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReferenceUnavailable(f"cannot create cache dir {cache}: {exc}") from None

    wheel = cache / WHEEL_NAME
    if not wheel.is_file():
        wheel = _download_wheel(cache)
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        bad = wheel.with_name(wheel.name + ".bad")
        os.replace(wheel, bad)
        raise ReferenceUnavailable(f"sha256 mismatch for {wheel.name}: got {digest}, expected {WHEEL_SHA256} (moved to {bad})")

    tmp = Path(tempfile.mkdtemp(dir=cache, prefix="extract-"))
    tmp.chmod(0o755)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if _wanted(n)]
            for n in names:
                zf.extract(n, tmp)
        missing = [m for m in _VOS_MODULES if not (tmp / VOS_DIR / f"{m}.py").is_file()]
        if missing or not (tmp / PIPELINE_FILE).is_file():
            raise ReferenceUnavailable(f"wheel lacks expected files: {missing or PIPELINE_FILE}")
        (tmp / "WHEEL_SHA256").write_text(WHEEL_SHA256 + "\n")
        if extracted.exists():
            shutil.rmtree(extracted, ignore_errors=True)
        try:
            os.replace(tmp, extracted)
        except OSError:
            # a concurrent process won the race; use its (identical) result
            if not (extracted / PIPELINE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return extracted


# ----------------------------------------------------------------------------------------------------------------------
# stubs
# ----------------------------------------------------------------------------------------------------------------------

_PIL_TO_MODE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.NEAREST / BILINEAR / BICUBIC


def _to_tensor(pic: Any) -> torch.Tensor:
    """torchvision ToTensor for a PIL image / HWC uint8 array: CHW float32 = uint8 / 255."""
    arr = np.array(pic, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    if t.dtype == torch.uint8:
        return t.to(dtype=torch.get_default_dtype()).div(255)
    return t


def _resize_int(img: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """torchvision (<=0.16) tensor ``resize(img, size: int, interpolation)``: short side -> size, long side truncated,
    antialias off. Same size is an identity."""
    h, w = img.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) == (h, w):
        return img
    x = img
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    if mode == "nearest":
        x = F.interpolate(x, size=(new_h, new_w), mode="nearest")
    else:
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=False)
    return x.squeeze(0) if squeeze else x


def _make_transforms_stub() -> types.ModuleType:
    m = types.ModuleType(f"{NS}.torchvision.transforms")

    class Compose:
        def __init__(self, transforms):
            self.transforms = list(transforms)

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class ToTensor:
        def __call__(self, pic):
            return _to_tensor(pic)

    class Normalize:
        def __init__(self, mean, std, inplace=False):
            self.mean, self.std = list(mean), list(std)

        def __call__(self, t):
            mean = torch.as_tensor(self.mean, dtype=t.dtype).view(-1, 1, 1)
            std = torch.as_tensor(self.std, dtype=t.dtype).view(-1, 1, 1)
            return t.sub(mean).div(std)

    class Resize:
        def __init__(self, size, interpolation=2):
            if not isinstance(size, int):
                raise NotImplementedError("stub Resize supports an int size only")
            self.size = size
            self.mode = _PIL_TO_MODE[int(interpolation)]

        def __call__(self, t):
            if not isinstance(t, torch.Tensor):
                raise NotImplementedError("stub Resize supports tensors only")
            return _resize_int(t, self.size, self.mode)

    m.Compose, m.ToTensor, m.Normalize, m.Resize = Compose, ToTensor, Normalize, Resize
    return m


def _package(name: str) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__path__ = []  # mark as package
    m.__package__ = name
    return m


def _install_stubs() -> dict[str, types.ModuleType]:
    mods: dict[str, types.ModuleType] = {}
    for name in (NS, f"{NS}.models", f"{NS}.models.cv", _VOS_PKG, f"{NS}.pipelines", f"{NS}.pipelines.cv",
                 f"{NS}.utils", f"{NS}.torchvision"):
        mods[name] = _package(name)

    tv_models = types.ModuleType(f"{NS}.torchvision.models")

    def resnet50(pretrained: bool = False, **kwargs):
        if pretrained or kwargs:
            raise NotImplementedError("stub resnet50 supports pretrained=False only")
        # the reference's own torchvision-layout ResNet-50 (Bottleneck, bias=False)
        return sys.modules[f"{_VOS_PKG}.mod_resnet"].resnet50(pretrained=False)

    tv_models.resnet50 = resnet50
    mods[tv_models.__name__] = tv_models
    mods[f"{NS}.torchvision.transforms"] = _make_transforms_stub()

    metainfo = types.ModuleType(f"{NS}.metainfo")
    metainfo.Pipelines = types.SimpleNamespace(video_object_segmentation="video-object-segmentation")
    metainfo.Models = types.SimpleNamespace(video_object_segmentation="video-object-segmentation")
    mods[metainfo.__name__] = metainfo

    outputs = types.ModuleType(f"{NS}.outputs")
    outputs.OutputKeys = types.SimpleNamespace(MASKS="masks")
    mods[outputs.__name__] = outputs

    base = types.ModuleType(f"{NS}.pipelines.base")

    class Pipeline:  # minimal stand-in: the real __init__ builds/loads the model; we pass a built one
        def __init__(self, model=None, **kwargs):
            self.model = model

    base.Pipeline, base.Input = Pipeline, Any
    mods[base.__name__] = base

    builder = types.ModuleType(f"{NS}.pipelines.builder")

    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    builder.PIPELINES = _Registry()
    mods[builder.__name__] = builder

    constant = types.ModuleType(f"{NS}.utils.constant")
    constant.Tasks = types.SimpleNamespace(video_object_segmentation="video-object-segmentation")
    mods[constant.__name__] = constant

    logger = types.ModuleType(f"{NS}.utils.logger")
    import logging

    logger.get_logger = lambda *a, **k: logging.getLogger(NS)
    mods[logger.__name__] = logger
    return mods


_IMPORT_RE = re.compile(r"^(\s*(?:from|import)\s+)(modelscope|torchvision)\b", re.MULTILINE)


def _rewrite_imports(src: str) -> str:
    return _IMPORT_RE.sub(lambda m: m.group(1) + (NS if m.group(2) == "modelscope" else f"{NS}.torchvision"), src)


def _exec_file(name: str, path: Path) -> types.ModuleType:
    src = _rewrite_imports(path.read_text())
    if re.search(r"^\s*(from|import)\s+(modelscope|torchvision)\b", src, re.MULTILINE):
        raise ReferenceUnavailable(f"unexpected import left in {path}")
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    mod.__package__ = name.rpartition(".")[0]
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, mod)
    code = compile(src, str(path), "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, mod.__dict__)
    return mod


_LOADED: types.SimpleNamespace | None = None


def load_reference() -> types.SimpleNamespace:
    """Import the reference modules in isolation (cached). Returns a namespace with attributes
    aggregate, cbam, mod_resnet, modules, network, eval_network, inference_memory_bank, inference_core, pipeline, root.
    """
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    root = get_reference_dir()
    added: list[str] = []
    try:
        for name, mod in _install_stubs().items():
            sys.modules[name] = mod
            added.append(name)
        for parent in list(added):
            p, _, c = parent.rpartition(".")
            if p:
                setattr(sys.modules[p], c, sys.modules[parent])
        ns = types.SimpleNamespace(root=root)
        for m in _VOS_MODULES:
            full = f"{_VOS_PKG}.{m}"
            added.append(full)
            setattr(ns, m, _exec_file(full, root / VOS_DIR / f"{m}.py"))
        full = f"{NS}.pipelines.cv.video_object_segmentation_pipeline"
        added.append(full)
        ns.pipeline = _exec_file(full, root / PIPELINE_FILE)
    except BaseException:
        for name in added:
            sys.modules.pop(name, None)
        raise
    _LOADED = ns
    return ns


def unload_reference() -> None:
    """Remove every ``_rdevos_ref_ms*`` entry from sys.modules."""
    global _LOADED
    for name in [n for n in sys.modules if n == NS or n.startswith(NS + ".")]:
        del sys.modules[name]
    _LOADED = None


# ----------------------------------------------------------------------------------------------------------------------
# deterministic random network
# ----------------------------------------------------------------------------------------------------------------------

# Random-weight scheme (all drawn from one torch.Generator seeded with ``seed``, in ``named_modules()`` order; every
# state-dict entry is overwritten, so the result does not depend on the global RNG):
#   conv / linear weight ~ N(0, (INIT_GAIN * override)^2 / fan_in), bias ~ N(0, 0.02^2)
#   BatchNorm: weight ~ 1 + N(0, 0.1^2) (x RESIDUAL_BN_SCALE for the last BN of a residual branch), bias ~ N(0, 0.05^2),
#              running_mean ~ N(0, 0.05^2), running_var ~ U[0.5, 1.5], num_batches_tracked = 0
#   then the few targeted adjustments below, and a calibration of decoder.pred.bias on a synthetic frame.
# The numbers were chosen by measuring activations on DAVIS frames (README.md): keys/values/memory O(1), affinity far
# from the exp overflow of the reference top-k, logits spread around 0, background and every object present.
INIT_GAIN = 1.0
#: last BN of each residual branch (Bottleneck.bn3 / BasicBlock.bn2) is scaled down so the residual streams of the
#: ResNets do not grow with depth
RESIDUAL_BN_SCALE = 0.5


# per-module gain multipliers, matched as a suffix of the module name
GAIN_OVERRIDES: dict[str, float] = {
    "key_proj.key_proj": 1.5,  # keys with per-channel std ~0.8: a peaked, but finite, top-k affinity
    "non_local.W": 0.1,  # the non-local sum over 256 inner channels otherwise makes the value RDE ~10x the values
    "decoder.pred": 3.0,  # logits with a spatial std of ~2 instead of ~0.4
    "skip_conv": 0.5,  # the shared f8/f4 skip features otherwise dominate the per-object decoder path
}
#: modules whose weight is centred over its fan-in (removes the offset a ReLU'd input would give the logits)
CENTRED_WEIGHTS = ("decoder.pred",)


def _gain_override(mname: str) -> float:
    for suffix, gain in GAIN_OVERRIDES.items():
        if mname == suffix or mname.endswith("." + suffix):
            return gain
    return 1.0


#: (input-channel slice, factor) applied to a module's weight, to make the per-object values depend on the masks
#: (otherwise the mask-independent key feature f16 dominates them and all objects look alike)
INPUT_CHANNEL_SCALES: dict[str, tuple[tuple[slice, float], ...]] = {
    "value_encoder.conv1": ((slice(3, 5), 4.0),),  # the mask and "others" channels
    "value_encoder.fuser.block1.conv1": ((slice(0, 256), 2.0), (slice(256, None), 0.5)),
    "value_encoder.fuser.block1.downsample": ((slice(0, 256), 2.0), (slice(256, None), 0.5)),
    # the decoder input is [readout (per object), f16_thin (shared)]: favour the readout
    "decoder.compress.conv1": ((slice(0, 512), 2.0), (slice(512, None), 0.5)),
    "decoder.compress.downsample": ((slice(0, 512), 2.0), (slice(512, None), 0.5)),
}


#: median decoder logit on the synthetic calibration frame (objects are the minority of the pixels)
LOGIT_MEDIAN = -1.0


def _synthetic_frame(seed: int, h: int = 128, w: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic smooth pseudo-image [1, 3, h, w] (normalised scale) and a 2-object mask [2, 1, h, w]."""
    g = torch.Generator().manual_seed(int(seed) + 7919)
    low = torch.randn((1, 3, 6, 10), generator=g)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False) + 0.3 * torch.randn((1, 3, h, w), generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    blob = ((yy / 0.5) ** 2 + (xx / 0.4) ** 2) < 1
    mask = torch.stack([blob & (xx < 0), blob & (xx >= 0)]).float()[:, None]
    return img, mask


def _calibrate_logit_offset_(net: nn.Module, seed: int) -> None:
    """Shift ``decoder.pred.bias`` so the median logit on a synthetic frame is LOGIT_MEDIAN (the seed-dependent offset
    of a random decoder is otherwise several units, making the background win everywhere or nowhere)."""
    img, mask = _synthetic_frame(seed)
    _, f16_thin, f16, f8, f4 = net.encode_key(img)
    v = net.encode_value(img, f16, mask)[:, :, 0]
    k = mask.shape[0]
    logits = net.decoder(torch.cat([v, f16_thin.expand(k, -1, -1, -1)], 1), f8.expand(k, -1, -1, -1),
                         f4.expand(k, -1, -1, -1))
    with torch.no_grad():
        net.decoder.pred.bias.add_(LOGIT_MEDIAN - logits.median())


def _reinit_(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(int(seed))

    def randn(shape):
        return torch.randn(tuple(shape), generator=g, dtype=torch.float32)

    def rand(shape):
        return torch.rand(tuple(shape), generator=g, dtype=torch.float32)

    touched: set[str] = set()
    for mname, mod in net.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            w = mod.weight
            fan_in = w[0].numel()
            gain = INIT_GAIN * _gain_override(mname)
            wv = randn(w.shape) * (gain / math.sqrt(fan_in))
            if any(mname == c or mname.endswith("." + c) for c in CENTRED_WEIGHTS):
                wv = wv - wv.flatten(1).mean(1).view(-1, *([1] * (wv.dim() - 1)))
            for sl, factor in INPUT_CHANNEL_SCALES.get(mname, ()):
                wv[:, sl] *= factor
            w.data.copy_(wv)
            touched.add(prefix + "weight")
            if mod.bias is not None:
                mod.bias.data.copy_(randn(mod.bias.shape) * 0.02)
                touched.add(prefix + "bias")
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            c = mod.num_features
            last_of_branch = mname.endswith(".bn3") or (mname.endswith(".bn2") and "key_encoder" not in mname)
            scale = RESIDUAL_BN_SCALE if last_of_branch else 1.0
            mod.weight.data.copy_((1.0 + 0.1 * randn((c,))) * scale)
            mod.bias.data.copy_(0.05 * randn((c,)))
            mod.running_mean.copy_(0.05 * randn((c,)))
            mod.running_var.copy_(0.5 + rand((c,)))
            mod.num_batches_tracked.zero_()
            touched.update(prefix + s for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
        else:
            own = list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
            if own:
                raise AssertionError(f"unhandled module with state: {mname} ({type(mod).__name__})")
    missing = set(net.state_dict()) - touched
    if missing:
        raise AssertionError(f"state not re-initialised: {sorted(missing)[:5]} ...")


def expected_state_dict_shapes(path: Path | None = None) -> dict[str, tuple[int, ...]]:
    """Parse ``rdevos-state-dict-keys.txt`` into {key: shape}."""
    path = STATE_DICT_KEYS_FILE if path is None else path
    out: dict[str, tuple[int, ...]] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, shape = line.partition(" ")
        out[key] = tuple(int(s) for s in shape.strip("()").replace(" ", "").split(",") if s)
    return out


def make_reference_net(seed: int) -> nn.Module:
    """The reference ``eval_network.RDE_VOS()`` in eval mode with deterministic, numerically sane random weights."""
    ref = load_reference()
    # construction draws from the global RNG (default inits); keep the caller's RNG state untouched
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        net = ref.eval_network.RDE_VOS()
    with torch.no_grad():
        _reinit_(net, seed)
    net.eval()
    with torch.no_grad():
        _calibrate_logit_offset_(net, seed)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def check_state_dict_layout(sd: Mapping[str, torch.Tensor], path: Path | None = None) -> None:
    """Assert ``sd`` has exactly the 435 documented keys with the documented shapes."""
    if path is None and not STATE_DICT_KEYS_FILE.is_file():
        return
    expected = expected_state_dict_shapes(path)
    assert len(expected) == 435, len(expected)
    got = {k: tuple(v.shape) for k, v in sd.items()}
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    bad = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not bad, list(bad.items())[:5]


def reference_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """State dict of ``make_reference_net(seed)`` (official key layout, checked against rdevos-state-dict-keys.txt)."""
    sd = {k: v.detach().clone() for k, v in make_reference_net(seed).state_dict().items()}
    check_state_dict_layout(sd)
    return sd


def _net_from(model_or_sd: nn.Module | Mapping[str, torch.Tensor]) -> nn.Module:
    if isinstance(model_or_sd, nn.Module):
        return model_or_sd
    ref = load_reference()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        net = ref.eval_network.RDE_VOS()
    net.load_state_dict(dict(model_or_sd), strict=True)  # as modelscope's VideoObjectSegmentation does
    net.eval()
    return net


# ----------------------------------------------------------------------------------------------------------------------
# running the reference
# ----------------------------------------------------------------------------------------------------------------------


def _unpad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    left, right, top, bottom = (int(p) for p in pad)
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


def run_reference_core(net: nn.Module, images: torch.Tensor, mask_onehot: torch.Tensor, *, top_k: int,
                       mem_every: int) -> torch.Tensor:
    """Run the reference ``InferenceCore`` (mode two-frames-compress) from frame 0 to the end.

    images: [T, 3, H, W] normalised float; mask_onehot: [K, H, W] 0/1 mask of frame 0.
    Returns the unpadded, aggregated probabilities [K+1, T, H, W] float32 (channel 0 = background).
    """
    ref = load_reference()
    assert images.dim() == 4 and images.shape[1] == 3, images.shape
    assert mask_onehot.dim() == 3 and mask_onehot.shape[-2:] == images.shape[-2:], (mask_onehot.shape, images.shape)
    images = images.detach().to("cpu", torch.float32)
    mask = mask_onehot.detach().to("cpu", torch.float32)
    k, t = mask.shape[0], images.shape[0]
    with torch.inference_mode(), contextlib.redirect_stdout(io.StringIO()):
        core = ref.inference_core.InferenceCore(net, False, images[None], k, top_k=top_k, mem_every=mem_every)
        core.interact(mask[:, None], 0, t)  # [K, 1, H, W], exactly as pipeline / eval_davis pass msk[:, 0]
        prob = _unpad(core.prob[:, :, 0], core.pad)
    return prob.clone()


def run_reference_davis(net: nn.Module, images: torch.Tensor, mask_onehot: torch.Tensor, top_k: int = 40,
                        mem_every: int = 3) -> torch.Tensor:
    """Official DAVIS-2017 setting (``eval_davis.py``: no resize, top 40, mem_every 3)."""
    return run_reference_core(net, images, mask_onehot, top_k=top_k, mem_every=mem_every)


def _collate(data: Any) -> Any:
    """Semantics of ``modelscope.pipelines.base.collate_fn`` on CPU (numbers-tuples become tensors, arrays tensors)."""
    from torch.utils.data.dataloader import default_collate

    if isinstance(data, Mapping):
        return type(data)({k: (_collate(v) if k != "img_metas" else v) for k, v in data.items()})
    if isinstance(data, (tuple, list)):
        if len(data) == 0:
            return torch.Tensor([])
        if isinstance(data[0], (int, float)):
            return default_collate(data)
        return type(data)(_collate(v) for v in data)
    if isinstance(data, np.ndarray):
        if data.dtype.type is np.str_:
            return data
        return torch.from_numpy(data)
    if isinstance(data, (torch.Tensor, bytes, str, int, float, bool, type(None))):
        return data
    raise ValueError(f"Unsupported data type {type(data)}")


def run_reference_pipeline(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], pil_images: Sequence[Any],
                           pil_mask: Any) -> np.ndarray:
    """End-to-end ModelScope ``video-object-segmentation`` pipeline (preprocess -> collate -> forward -> postprocess),
    running the reference pipeline class itself with stubbed torchvision transforms. Returns uint8 [T, H, W] with
    labels 0..K (K = number of distinct non-zero values of the P-mode mask), at the mask's original size."""
    ref = load_reference()
    net = _net_from(model_or_state_dict)
    pipe = ref.pipeline.VideoObjectSegmentationPipeline(model=types.SimpleNamespace(model=net))
    with contextlib.redirect_stdout(io.StringIO()):
        out = pipe.preprocess({"images": list(pil_images), "mask": pil_mask})
        with torch.inference_mode():
            out = _collate(out)
            out = pipe.forward(out)
        out = pipe.postprocess(out)
    return np.asarray(out["masks"])


# ----------------------------------------------------------------------------------------------------------------------
# test-data helpers (DAVIS-2016 frames from the shared folder)
# ----------------------------------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def shared_dir() -> Path:
    return Path(os.environ.get("RDEVOS_SHARED", _REPO.parent / "shared")).expanduser()


def davis2016_dir() -> Path:
    return shared_dir() / "data" / "davis2016-train"


def normalise(pil_image: Any) -> torch.Tensor:
    """ToTensor + ImageNet Normalize: [3, H, W] float32."""
    t = _to_tensor(pil_image)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return t.sub(mean).div(std)


def load_davis_clip(seq: str, n_frames: int, size: tuple[int, int] | None = None, *, root: Path | None = None
                    ) -> tuple[list[Any], Any]:
    """First ``n_frames`` RGB PIL frames of a DAVIS-2016 sequence and its frame-0 mask (PIL 'P'), optionally resized
    to ``size`` = (W, H) (frames bilinear, mask nearest)."""
    from PIL import Image

    root = davis2016_dir() if root is None else root
    frames = []
    for i in range(n_frames):
        im = Image.open(root / "JPEGImages" / seq / f"{i:05d}.jpg").convert("RGB")
        frames.append(im if size is None else im.resize(size, Image.BILINEAR))
    mask = Image.open(root / "Annotations" / seq / "00000.png")
    if size is not None:
        mask = mask.resize(size, Image.NEAREST)
    return frames, mask


def split_mask_by_bbox(mask: np.ndarray, k: int) -> np.ndarray:
    """Label map 0..k: the foreground (mask > 0) cut into k vertical stripes of equal width over its bounding box."""
    fg = np.asarray(mask) > 0
    if not fg.any():
        raise ValueError("empty mask")
    xs = np.nonzero(fg)[1]
    edges = np.linspace(xs.min(), xs.max() + 1, k + 1)
    cols = np.arange(fg.shape[1])[None, :]
    out = np.zeros(fg.shape, dtype=np.uint8)
    for j in range(k):
        out[fg & (cols >= edges[j]) & (cols < edges[j + 1])] = j + 1
    return out


def onehot(labels: np.ndarray, values: Sequence[int] | None = None) -> torch.Tensor:
    """[K, H, W] float 0/1 one-hot of the non-zero labels (sorted unique non-zero values unless given)."""
    labels = np.asarray(labels)
    if values is None:
        values = [int(v) for v in np.unique(labels) if v != 0]
    return torch.from_numpy(np.stack([(labels == v) for v in values]).astype(np.float32))
