"""Speed and peak memory of the engine per resolution, video length, precision and device.

Every configuration runs in a fresh Python process (``python -m rdevos.eval.bench CONFIG_JSON``), so its peak
memory is its own: the RSS high-water mark (``getrusage``) of that process and, on CUDA, ``max_memory_allocated``.
Nothing one configuration allocates can raise the number of the next.

The clip is the bundled sample (25 frames of DAVIS ``bear``) resized to the configuration's short side and played
forwards and backwards to any length; its mask is split into ``objects`` objects by bounding-box columns. Frames are
given at the benchmarked resolution (the engine does not resize them), so reference and rdevos see the same input.

The reference implementation (ModelScope port) is not part of the package: its harness lives in the source checkout
(``benchmarks/bench_engine.py`` with ``tests/reference/``) and is run there as a script, never imported by the
library. :func:`reference_script` finds it or says that ``--reference`` needs a source checkout.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rdevos.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["BenchConfig", "BenchRow", "BenchReport", "MemoryProbe", "run_bench", "measure", "bench_clip",
           "frame_order", "random_model", "emit", "peak_rss_mib", "reference_script", "require_matplotlib",
           "require_peers", "PEERS",
           "plot_report", "format_bench_table", "parse_int_list"]

#: Marks the result line a child process prints on stdout (the rest of its output is ignored).
RESULT_PREFIX = "RDEVOS_BENCH_RESULT "
#: Peers measured by ``--peers`` (random weights: their weights cannot be downloaded here): package, config.
PEERS: dict[str, tuple[str, str]] = {"sam2.1-tiny": ("sam2", "configs/sam2.1/sam2.1_hiera_t.yaml"),
                                     "sam2.1-small": ("sam2", "configs/sam2.1/sam2.1_hiera_s.yaml"),
                                     "cutie-small": ("cutie", "small"), "cutie-base": ("cutie", "base")}
IMPLS = ("rdevos", "reference", *PEERS)
PRECISIONS = ("fp32", "bf16", "fp16")
PEERS_HINT = "pip install 'rdevos[peers]'"


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration (what a child process runs)."""

    impl: str = "rdevos"  #: ``rdevos`` or ``reference``
    device: str = "cpu"
    precision: str = "fp32"
    resolution: int = 480  #: short side of the frames, in pixels
    length: int = 25  #: frames in the timed video
    objects: int = 2
    model: str | None = None  #: checkpoint / name for ``load_model``; ``None``: official architecture, random weights
    top_k: int = 40
    mem_every: int = 3
    warmup: int = 3  #: frames of an untimed warm-up video first (kernels, allocator); 0 for none
    threads: int | None = None  #: torch intra-op threads (default: torch's)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchConfig:
        return cls(**d)


@dataclass
class BenchRow:
    """Result of one configuration. Memory in MiB; ``cuda_max_allocated_mib`` is ``None`` off CUDA."""

    impl: str
    device: str
    precision: str
    resolution: int
    length: int
    objects: int
    height: int | None = None
    width: int | None = None
    seconds: float | None = None  #: timed run, all ``length`` frames (excludes model load and warm-up), wall clock
    s_per_frame: float | None = None
    fps: float | None = None
    #: process CPU time per frame (all threads); with 1 thread it is s_per_frame without other processes' contention
    cpu_s_per_frame: float | None = None
    peak_rss_mib: float | None = None  #: RSS high-water mark of the whole process (imports, model, warm-up, video)
    rss_before_mib: float | None = None  #: RSS right before the timed video (after model, frames and warm-up)
    run_peak_rss_mib: float | None = None  #: RSS high-water mark during the timed video (Linux; else None)
    cuda_max_allocated_mib: float | None = None
    memory_bank_mib: float | None = None  #: rdevos memory banks at the end (constant in video length)
    threads: int | None = None
    pid: int | None = None  #: process that measured it (one per configuration)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BenchReport:
    """All rows of a run plus what they were measured with."""

    rows: list[BenchRow]
    model: str  #: human description of the weights
    random_weights: bool
    parameters: int | None
    settings: dict[str, Any]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "random_weights": self.random_weights, "parameters": self.parameters,
                "settings": self.settings, "machine": self.machine, "notes": self.notes,
                "rows": [r.to_dict() for r in self.rows]}

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p


# ------------------------------------------------------------------------------------------------ helpers
def parse_int_list(text: str, what: str) -> list[int]:
    """``"240,480"`` -> ``[240, 480]``; raises InputError naming ``what`` otherwise."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not out:
        raise InputError(f"{what} is empty")
    return out


def peak_rss_mib() -> float:
    """RSS high-water mark of this process in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024


def _proc_status_mib(key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux) in MiB, else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


class MemoryProbe:
    """Process memory around a timed run: created right before it, :meth:`result` right after.

    On Linux the high-water mark is reset at creation (``/proc/self/clear_refs``), so ``run_peak_rss_mib`` is the
    peak while the video ran, with what setup left behind included but not its transient peaks (model loading).
    """

    def __init__(self) -> None:
        self.setup_peak = peak_rss_mib()
        self.before = _proc_status_mib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
            self.reset = _proc_status_mib("VmHWM") is not None
        except OSError:
            self.reset = False

    def result(self) -> dict[str, float | None]:
        run = _proc_status_mib("VmHWM") if self.reset else None
        return {"peak_rss_mib": max(self.setup_peak, peak_rss_mib(), run or 0.0), "rss_before_mib": self.before,
                "run_peak_rss_mib": run}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The CPU flags that decide the fast path: AMX and AVX512 bf16/fp16/VNNI, AVX512F, AVX2 (Linux /proc)."""
    wanted = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx512f", "avx2")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def _machine() -> dict[str, Any]:
    import torch

    from rdevos import __version__
    from rdevos.device import default_precision

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": _cpu_name(), "cpu_flags": _cpu_flags(), "cpu_amx": "amx_bf16" in _cpu_flags(),
                            "cpu_default_precision": default_precision(torch.device("cpu")).value,
                            "cpu_count": os.cpu_count(), "usable_cores": cores,
                            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "rdevos": __version__, "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def bench_clip(resolution: int, objects: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The bundled sample clip at short side ``resolution`` and a mask with labels ``1..objects``.

    Returns:
        frames: 25 (H, W, 3) uint8 frames; loop them with :func:`frame_order`.
        labels: (H, W) uint8 label map of frame 0.
    """
    from PIL import Image

    root = importlib.resources.files("rdevos") / "assets" / "sample"
    files = sorted((p for p in (root / "frames").iterdir() if p.name.endswith(".jpg")), key=lambda p: p.name)
    if not files:
        raise InputError("the bundled sample frames (rdevos/assets/sample/frames) are missing; reinstall rdevos")

    def size_of(w: int, h: int) -> tuple[int, int]:
        s = resolution / min(w, h)
        return max(1, round(w * s)), max(1, round(h * s))

    frames = []
    for f in files:
        with f.open("rb") as fh, Image.open(fh) as im:
            rgb = im.convert("RGB")
            frames.append(np.asarray(rgb.resize(size_of(*rgb.size), Image.BILINEAR)))
    with (root / "first_mask.png").open("rb") as fh, Image.open(fh) as m:
        fg = np.asarray(m.resize(size_of(*m.size), Image.NEAREST)) > 0
    ys, xs = np.nonzero(fg)
    edges = np.linspace(xs.min(), xs.max() + 1, objects + 1).astype(int)
    labels = np.zeros(fg.shape, np.uint8)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:]), start=1):
        labels[:, a:b][fg[:, a:b]] = k
    if len(np.unique(labels)) != objects + 1:
        raise InputError(f"cannot split the sample object into {objects} objects at short side {resolution}: "
                         "use fewer objects or a larger resolution")
    return frames, labels


def frame_order(n_unique: int, length: int) -> list[int]:
    """Indices of ``length`` frames playing ``n_unique`` frames forwards and backwards (no jump cut)."""
    cycle = list(range(n_unique)) + list(range(n_unique - 2, 0, -1)) if n_unique > 1 else [0]
    return [cycle[i % len(cycle)] for i in range(length)]


def random_model(seed: int = 0) -> Any:
    """The official architecture with deterministic random weights that keep activations O(1).

    PyTorch's default init shrinks activations through the 50-layer key encoder; a fan-in normal init keeps them in
    range so the timing is not distorted by degenerate values (denormals, all-zero top-k).
    """
    import torch

    from rdevos.config import ModelConfig
    from rdevos.model.network import RDEVOS

    g = torch.Generator().manual_seed(seed)
    net = RDEVOS(ModelConfig())
    with torch.no_grad():
        for name, p in net.named_parameters():
            # in place: no temporary copies to inflate the process's memory high-water mark
            if p.ndim > 1:
                p.normal_(0.0, (1.0 / p[0].numel()) ** 0.5, generator=g)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05, generator=g)
            else:
                p.normal_(1.0, 0.05, generator=g)
        # Bounded RDE values over many compressions (as benchmarks/bench_engine.py does for the reference weights).
        net.mem_compress.compress_value.weight.mul_(0.3)
    return net.eval()


# ------------------------------------------------------------------------------------------------ peers
def require_peers() -> None:
    """Raise InputError naming the ``peers`` extra if SAM 2 (``sam2``) or Cutie (``rf-cutie``) is missing."""
    import importlib.util

    missing = []
    for pkg, module in (("sam2", "sam2.build_sam"), ("rf-cutie", "cutie.inference.inference_core"),
                        ("hydra-core", "hydra")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(pkg)
    if missing:
        raise InputError(f"--peers needs the optional extra 'peers' (missing: {', '.join(missing)}): {PEERS_HINT}")


def _peer_video(c: BenchConfig, frames: list[np.ndarray], labels: np.ndarray) -> Any:
    """``video(n) -> (wall s, CPU s)`` of one peer on the first ``n`` frames of the looped clip, random weights."""
    import tempfile

    import torch
    from PIL import Image

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    package, config = PEERS[c.impl]
    ids = list(range(1, c.objects + 1))
    GlobalHydra.instance().clear()  # importing sam2 initialises hydra with its own configs
    if package == "cutie":
        from cutie.model.utils import resnet

        for name in ("resnet18", "resnet50"):  # random weights: no ImageNet download
            make = getattr(resnet, name)
            setattr(resnet, name, lambda pretrained=True, _make=make, **kw: _make(pretrained=False, **kw))
        from cutie.inference.inference_core import InferenceCore
        from cutie.model.cutie import CUTIE

        with initialize_config_module(version_base="1.3.2", config_module="cutie.config"):
            # Cutie's DAVIS-2017 settings (memory every 5th frame, at most 5 memory frames, no long-term memory)
            cfg = compose(config_name="eval_config", overrides=[f"model={config}", "mem_every=5",
                                                                  "use_long_term=False"])
        torch.manual_seed(c.seed)
        net = CUTIE(cfg).eval()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        mask = torch.from_numpy(labels.astype(np.int64))

        @torch.inference_mode()
        def video(n: int) -> tuple[float, float]:
            proc = InferenceCore(net, cfg=cfg)
            t0, c0 = time.perf_counter(), time.process_time()
            for i, j in enumerate(frame_order(len(frames), n)):
                image = (torch.tensor(frames[j]).permute(2, 0, 1).float() / 255 - mean) / std
                prob = proc.step(image, mask if i == 0 else None, objects=ids if i == 0 else None,
                                 end=i == n - 1)
                prob.argmax(0).to(torch.uint8)
            return time.perf_counter() - t0, time.process_time() - c0

        return video
    from sam2.build_sam import build_sam2_video_predictor

    GlobalHydra.instance().clear()
    initialize_config_module("sam2", version_base="1.2")  # what importing sam2 does (its configs)
    torch.manual_seed(c.seed)
    predictor = build_sam2_video_predictor(config, ckpt_path=None, device=c.device)

    def video(n: int) -> tuple[float, float]:
        with tempfile.TemporaryDirectory(prefix="rdevos-bench-sam2-") as d:
            for i, j in enumerate(frame_order(len(frames), n)):  # the predictor reads a folder of JPEGs
                Image.fromarray(frames[j]).save(f"{d}/{i:05d}.jpg", quality=95)
            state = predictor.init_state(video_path=d)  # loads and resizes every frame first (not timed)
        for k in ids:
            predictor.add_new_mask(state, frame_idx=0, obj_id=k, mask=labels == k)
        t0, c0 = time.perf_counter(), time.process_time()
        for _idx, _ids, logits in predictor.propagate_in_video(state):
            (logits > 0).cpu()
        return time.perf_counter() - t0, time.process_time() - c0

    return video


# ------------------------------------------------------------------------------------------------ child side
def measure(config: BenchConfig) -> BenchRow:
    """Run one rdevos configuration in this process and measure it (call it in a fresh process).

    The memory numbers are process-wide high-water marks, so they are only meaningful in a process that ran nothing
    else; :func:`run_bench` makes sure of that.
    """
    import torch

    from rdevos.config import InferenceConfig, Precision
    from rdevos.device import resolve_device
    from rdevos.inference.engine import InferenceEngine

    c = config
    if c.threads:
        torch.set_num_threads(c.threads)
    if c.impl in PEERS:
        return _measure_peer(c)
    device = resolve_device(c.device)
    if c.model is None:
        torch.manual_seed(c.seed)
        model = random_model(c.seed)
    else:
        from rdevos.hub import load_model

        model = load_model(c.model, device="cpu", progress=False)
    model = model.to(device)
    frames, labels = bench_clip(c.resolution, c.objects)
    icfg = InferenceConfig(top_k=c.top_k, mem_every=c.mem_every, resolution=None, precision=Precision(c.precision))
    cuda = device.type == "cuda"

    def video(n: int) -> tuple[float, float, int]:
        eng = InferenceEngine(model, icfg, device=device)
        order = frame_order(len(frames), n)
        if cuda:
            torch.cuda.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for i, j in enumerate(order):
            prob = eng.step(frames[j], labels if i == 0 else None, is_last=i == n - 1)
            eng.probs_to_labels(prob).to(torch.uint8).cpu()  # what a caller does with every frame (and a sync)
        return time.perf_counter() - t0, time.process_time() - c0, eng.memory_nbytes()

    if c.warmup:
        video(min(c.warmup, c.length))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    probe = MemoryProbe()
    secs, cpu_secs, bank = video(c.length)
    h, w = labels.shape
    return BenchRow(impl=c.impl, device=str(device), precision=c.precision, resolution=c.resolution, length=c.length,
                    objects=c.objects, height=h, width=w, seconds=secs, s_per_frame=secs / c.length,
                    fps=c.length / secs, cpu_s_per_frame=cpu_secs / c.length, **probe.result(),
                    cuda_max_allocated_mib=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
                    memory_bank_mib=bank / 2**20, threads=torch.get_num_threads(), pid=os.getpid())


def _measure_peer(c: BenchConfig) -> BenchRow:
    import torch

    frames, labels = bench_clip(c.resolution, c.objects)
    video = _peer_video(c, frames, labels)
    if c.warmup:
        video(min(c.warmup, c.length))
    probe = MemoryProbe()
    secs, cpu_secs = video(c.length)
    h, w = labels.shape
    return BenchRow(impl=c.impl, device=c.device, precision=c.precision, resolution=c.resolution, length=c.length,
                    objects=c.objects, height=h, width=w, seconds=secs, s_per_frame=secs / c.length,
                    fps=c.length / secs, cpu_s_per_frame=cpu_secs / c.length, **probe.result(),
                    threads=torch.get_num_threads(), pid=os.getpid())


def emit(row: BenchRow) -> None:
    """Print a child's result line (read back by :func:`run_bench`)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(row.to_dict()) + "\n")
    sys.stdout.flush()


def _child_main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m rdevos.eval.bench CONFIG_JSON (run by rdevos bench)\n")
        return 2
    emit(measure(BenchConfig.from_dict(json.loads(argv[0]))))
    return 0


# ------------------------------------------------------------------------------------------------ parent side
def reference_script() -> Path:
    """``benchmarks/bench_engine.py`` of the source checkout this package runs from (runs the reference).

    Raises:
        InputError: not a source checkout (e.g. a wheel install): the reference harness is not shipped.
    """
    repo = Path(__file__).resolve().parents[2]
    script = repo / "benchmarks" / "bench_engine.py"
    if script.is_file() and (repo / "tests" / "reference" / "modelscope_ref.py").is_file():
        return script
    raise InputError("--reference needs a source checkout of rdevos (benchmarks/bench_engine.py and "
                     "tests/reference/, which fetch the ModelScope reference from PyPI); this installation has "
                     f"neither next to {Path(__file__).resolve().parents[1]}. Install with `pip install -e .` "
                     "from a clone, or benchmark rdevos alone")


def _run_child(config: BenchConfig, timeout: float | None) -> BenchRow:
    if config.impl == "reference":
        cmd = [sys.executable, str(reference_script()), "_bench_child", json.dumps(config.to_dict())]
    else:
        cmd = [sys.executable, "-m", "rdevos.eval.bench", json.dumps(config.to_dict())]
    base = BenchRow(impl=config.impl, device=config.device, precision=config.precision,
                    resolution=config.resolution, length=config.length, objects=config.objects)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        base.error = f"timed out after {timeout:g} s"
        return base
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return BenchRow(**json.loads(line[len(RESULT_PREFIX):]))
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    how = f"killed by signal {-proc.returncode} (out of memory?)" if proc.returncode < 0 else \
        f"exit code {proc.returncode}"
    base.error = f"{how}: " + (tail[-1] if tail else "no output")
    logger.debug("child %s failed:\n%s", cmd, proc.stderr)
    return base


def run_bench(*, resolutions: Sequence[int], lengths: Sequence[int], precisions: Sequence[str] = ("fp32",),
              devices: Sequence[str] = ("cpu",), objects: int = 2, model: str | None = None,
              reference: bool = False, top_k: int = 40, mem_every: int = 3, warmup: int = 3,
              threads: int | None = None, max_reference_length: int = 400, timeout: float | None = None,
              peers: bool = False, progress: bool = True) -> BenchReport:
    """Measure every (device, precision, resolution, length), each in a fresh process.

    Args:
        resolutions: short sides in pixels (frames are given at that size; no resize inside the engine).
        lengths: video lengths in frames.
        precisions: ``fp32``, ``bf16``, ``fp16``.
        devices: ``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto``.
        model: checkpoint / name for :func:`rdevos.load_model`; ``None``: official architecture, random weights.
        reference: also run the reference (ModelScope) implementation, on CPU in fp32 only (what its harness
            supports) and up to ``max_reference_length`` frames (it keeps the whole video in memory).
        warmup: frames of an untimed warm-up video before each timed one.
        threads: torch threads in each child (default: torch's default, which follows ``OMP_NUM_THREADS``).
        timeout: seconds per configuration; a configuration that exceeds it is reported with an error.
        peers: also run SAM 2.1-tiny/small and Cutie-small/base (:data:`PEERS`, random weights) on the same clip,
            mask and settings, on CPU in fp32 (needs the ``peers`` extra: ``sam2`` and ``rf-cutie``).
    Returns:
        A :class:`BenchReport`; failed configurations are rows with ``error`` set.
    """
    import torch
    from tqdm.auto import tqdm

    from rdevos.device import resolve_device

    resolutions, lengths = sorted(set(resolutions)), sorted(set(lengths))
    if any(r < 16 for r in resolutions) or not resolutions:
        raise InputError(f"resolutions must be >= 16 pixels, got {list(resolutions)}")
    if any(n < 1 for n in lengths) or not lengths:
        raise InputError(f"lengths must be >= 1 frame, got {list(lengths)}")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise InputError(f"unknown precision {bad}; choose from {list(PRECISIONS)}")
    if objects < 1:
        raise InputError(f"objects must be >= 1, got {objects}")
    devs = []
    for d in devices:
        try:
            dev = resolve_device(d)
        except RuntimeError as e:
            raise InputError(f"unknown device {d!r}: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {d!r}: CUDA is not available in this torch build / machine")
        devs.append(str(dev))
    bench_clip(min(resolutions), objects)  # fails fast if the objects do not fit
    script = reference_script() if reference else None
    if peers:
        require_peers()

    params: int | None = None
    if model is None:
        desc, random_weights = "official architecture, random weights (no --model given: speed and memory only)", True
        from rdevos.config import ModelConfig
        from rdevos.model.network import RDEVOS

        with torch.device("meta"):
            params = sum(p.numel() for p in RDEVOS(ModelConfig()).parameters())
    else:
        from rdevos.hub import load_model

        net = load_model(model, device="cpu", progress=progress)  # fail here, once, with the loader's message
        params = sum(p.numel() for p in net.parameters())
        desc, random_weights = f"{model} ({params / 1e6:.1f} M parameters)", False
        del net

    common = dict(objects=objects, model=model, top_k=top_k, mem_every=mem_every, warmup=warmup, threads=threads)
    configs = [BenchConfig(impl="rdevos", device=d, precision=p, resolution=r, length=n,
                           **common)  # type: ignore[arg-type]
               for d in devs for p in precisions for r in resolutions for n in sorted(lengths)]
    notes: list[str] = []
    if script is not None:
        skipped = sorted(n for n in lengths if n > max_reference_length)
        if "cpu" not in devs or "fp32" not in precisions:
            notes.append("reference not run: its harness runs on CPU in fp32 only")
        else:
            configs += [BenchConfig(impl="reference", device="cpu", precision="fp32", resolution=r, length=n,
                                    **common)  # type: ignore[arg-type]
                        for r in resolutions for n in sorted(lengths) if n <= max_reference_length]
            notes.append("reference: ModelScope InferenceCore, CPU fp32 only; it holds the whole video in memory")
            if skipped:
                notes.append(f"reference not run for lengths {skipped} (> --max-reference-length "
                             f"{max_reference_length}; its memory grows with the video)")
    if peers:
        configs += [BenchConfig(impl=name, device="cpu", precision="fp32", resolution=r, length=n,
                                **common)  # type: ignore[arg-type]
                    for name in PEERS for r in resolutions for n in sorted(lengths)]
        notes.append("peers: SAM 2.1 (PyPI sam2, video predictor: frames resized to 1024x1024 inside, loading not "
                     "timed) and Cutie (PyPI rf-cutie, InferenceCore: memory every 5th frame, at most 5 memory "
                     "frames, its own top-k 30) with random weights, on CPU in fp32, same clip and masks")
    rows = []
    for c in tqdm(configs, desc="bench", unit="config", disable=not progress):
        logger.info("running %s %s %s %dp x %d frames", c.impl, c.device, c.precision, c.resolution, c.length)
        row = _run_child(c, timeout)
        if row.error:
            logger.warning("%s %s %s %dp x %d frames failed: %s", c.impl, c.device, c.precision, c.resolution,
                           c.length, row.error)
        rows.append(row)
    settings = {"top_k": top_k, "mem_every": mem_every, "warmup_frames": warmup, "objects": objects,
                "clip": "bundled sample (DAVIS bear, 25 frames) looped forwards and backwards, resized to the "
                        "short side; no resize inside the engine",
                "time": "seconds/s_per_frame/fps: wall clock of the timed video; cpu_s_per_frame: process CPU time "
                        "(all threads), not inflated by other processes on a shared machine",
                "memory": "each configuration in a fresh process. peak_rss_mib: the process's RSS high-water mark "
                          "(getrusage); rss_before_mib: RSS right before the timed video; run_peak_rss_mib: RSS "
                          "high-water mark during the timed video (reset through /proc/self/clear_refs, Linux); "
                          "cuda_max_allocated_mib: torch.cuda.max_memory_allocated during the timed video (null "
                          "off CUDA)"}
    return BenchReport(rows=rows, model=desc, random_weights=random_weights, parameters=params, settings=settings,
                       machine=_machine(), notes=notes)


# ------------------------------------------------------------------------------------------------ output
def format_bench_table(report: BenchReport) -> str:
    """A plain-text table of the rows (one line per configuration)."""
    head = f"{'impl':<13}{'device':<8}{'prec':<6}{'size':>10}{'frames':>8}{'s/frame':>10}{'fps':>8}" \
           f"{'CPU s/fr':>10}{'peak RSS':>11}{'video peak':>12}{'CUDA peak':>11}{'x ref':>7}"
    ref = {(r.resolution, r.length): r.s_per_frame for r in report.rows
           if r.impl == "reference" and r.error is None and r.s_per_frame}

    def mib(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} MiB"

    def speedup(r: BenchRow) -> str:
        base = ref.get((r.resolution, r.length))
        return f"{base / r.s_per_frame:.2f}" if base and r.impl != "reference" and r.s_per_frame else "-"

    lines = [f"model: {report.model}", head]
    for r in report.rows:
        size = f"{r.width}x{r.height}" if r.width else f"{r.resolution}p"
        if r.error:
            lines.append(f"{r.impl:<13}{r.device:<8}{r.precision:<6}{size:>10}{r.length:>8}  failed: {r.error}")
            continue
        lines.append(f"{r.impl:<13}{r.device:<8}{r.precision:<6}{size:>10}{r.length:>8}{r.s_per_frame:>10.3f}"
                     f"{r.fps:>8.2f}{r.cpu_s_per_frame or 0:>10.3f}{mib(r.peak_rss_mib):>11}"
                     f"{mib(r.run_peak_rss_mib):>12}"
                     f"{mib(r.cuda_max_allocated_mib):>11}{speedup(r):>7}")
    m = report.machine
    lines.append(f"machine: {m.get('cpu', '?')} ({' '.join(m.get('cpu_flags', [])) or 'flags unknown'}), "
                 f"{m.get('torch_threads')} torch thread(s), torch {m.get('torch')}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def require_matplotlib() -> None:
    """Raise InputError with the install hint if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("the benchmark plot needs matplotlib: pip install 'rdevos[bench]' "
                         "(or leave out --plot)") from None


def plot_report(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Plot s/frame and peak memory against video length, one line per (impl, device, precision, resolution).

    Wall-clock s/frame is drawn solid (dashed for the reference), process CPU time per frame dotted; memory is the
    RSS high-water mark during the timed video (whole process where that is not measurable) and CUDA's peak.
    Uses a bare ``Figure`` (Agg), so it neither needs a display nor changes a caller's pyplot backend.
    """
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator, ScalarFormatter

    series: dict[tuple[str, str, str, int], list[BenchRow]] = {}
    for r in report.rows:
        if r.error is None:
            series.setdefault((r.impl, r.device, r.precision, r.resolution), []).append(r)
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    lengths = sorted({r.length for r in report.rows})
    for (impl, dev, prec, res), rows in sorted(series.items()):
        rows.sort(key=lambda r: r.length)
        x = [r.length for r in rows]
        style = "-" if impl == "rdevos" else "--"
        label = f"{impl} {res}p {prec} {dev}"
        line = ax_t.plot(x, [r.s_per_frame for r in rows], style, marker="o", label=label)[0]
        # process CPU time too: on a shared machine wall time also counts other processes' load
        ax_t.plot(x, [r.cpu_s_per_frame for r in rows], ":", marker=".", color=line.get_color(),
                  label=f"{label} (CPU time)")
        # RSS while the video ran where the OS lets us measure it (Linux), else the whole process's peak
        ax_m.plot(x, [r.run_peak_rss_mib if r.run_peak_rss_mib is not None else r.peak_rss_mib for r in rows],
                  style, marker="o", color=line.get_color(), label=f"{label} RSS")
        if any(r.cuda_max_allocated_mib is not None for r in rows):
            ax_m.plot(x, [r.cuda_max_allocated_mib for r in rows], ":", marker="s", color=line.get_color(),
                      label=f"{label} CUDA")
    for ax, ylabel in ((ax_t, "seconds per frame (wall; dotted: CPU time)"),
                       (ax_m, "peak memory during the video (MiB)")):
        ax.set_xlabel("video length (frames)")
        ax.set_ylabel(ylabel)
        if len(lengths) > 1 and lengths[-1] / max(lengths[0], 1) >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(lengths)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    m = report.machine
    fig.suptitle(f"rdevos bench: {report.model}\n{m.get('cpu', '')}, {m.get('torch_threads')} torch thread(s), "
                 f"torch {m.get('torch')}", fontsize=9)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    return p


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
