"""int8 for the default model's encoders (key and value), through onnxruntime's quantised kernels: speed and masks.

The key encoder and the value encoder of the embedded model are exported to ONNX at one frame size (854x480 frames,
padded to 864x480: the traced size; the exporter's shape genericity is another branch's work, so nothing else is
measured) with :mod:`rdevos.export.graphs`' parts, then quantised statically by onnxruntime (QDQ, int8 weights per
channel, uint8 activations: the U8S8 kernels that use AVX512-VNNI), calibrated on frames and masks of DAVIS-2016
train sequences that are not held out.

Speed: CPU seconds per call, 1 thread, of the torch fast path (fp32, what the engine runs), onnxruntime fp32 and
onnxruntime int8, interleaved. Masks: the engine with its encoders replaced by the int8 sessions against the fp32
engine on the 8 held-out sequences (first mask, top-k 20, memory every 5th frame, short side 480, as the model
card): labels equal and J&F change (official measures, frames 1..N-2).

    python benchmarks/bench_int8.py -o docs/int8.json             # needs onnx + onnxruntime (rdevos[export])
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rdevos import InferenceConfig, load_model
from rdevos.export.graphs import export_parts
from rdevos.inference.engine import InferenceEngine
from rdevos.inference.preprocess import normalize, pad_divide_by, to_image_tensor
from rdevos.model.network import KeyFeatures

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = ("boat", "breakdance-flare", "dog-agility", "hike", "kite-walk", "motorbike", "soccerball", "tennis")
SIZE = (480, 864)  # the padded network input of an 854x480 frame
KEY_OUT = ["key", "f16_thin", "f16", "f8", "f4"]


def _root() -> Path:
    return Path(os.environ.get("RDEVOS_SHARED", REPO.parent / "shared")) / "data" / "davis2016-train"


def _frames(root: Path, seq: str, every: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from PIL import Image

    jpgs = sorted((root / "JPEGImages" / seq).glob("*.jpg"))[::every]
    pngs = sorted((root / "Annotations" / seq).glob("*.png"))[::every]
    return ([np.asarray(Image.open(p).convert("RGB")) for p in jpgs],
            [(np.asarray(Image.open(p)) > 0).astype(np.uint8) for p in pngs])


def _net_input(frame: np.ndarray) -> torch.Tensor:
    x, _ = pad_divide_by(normalize(to_image_tensor(frame, torch.device("cpu"))), 16)
    assert tuple(x.shape[-2:]) == SIZE, x.shape
    return x[None]


def export(model: torch.nn.Module, out: Path) -> dict[str, Path]:
    parts = export_parts(model)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, *SIZE, generator=g)
    with torch.no_grad():
        f16 = parts["key_encoder"](image)[2]
    masks = torch.rand(1, 2, *SIZE, generator=g)
    masks = masks / masks.sum(1, keepdim=True)
    paths = {"key": out / "key_encoder.onnx", "value": out / "value_encoder.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(parts["key_encoder"], (image,), str(paths["key"]), opset_version=17, input_names=["image"],
                          output_names=KEY_OUT, dynamo=False)
        torch.onnx.export(parts["value_encoder"], (image, f16, masks), str(paths["value"]), opset_version=17,
                          input_names=["image", "f16", "masks"], output_names=["value"],
                          dynamic_axes={"masks": {1: "K"}, "value": {1: "K"}}, dynamo=False)
    return paths


def quantize(paths: dict[str, Path], model: torch.nn.Module, root: Path, calib_seqs: list[str]) -> dict[str, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parts = export_parts(model)
    key_feeds, value_feeds = [], []
    for seq in calib_seqs:
        frames, gts = _frames(root, seq, every=20)
        for f, m in zip(frames, gts):
            x = _net_input(f)
            with torch.no_grad():
                f16 = parts["key_encoder"](x)[2]
            mask, _ = pad_divide_by(torch.from_numpy(m).float()[None, None], 16)
            key_feeds.append({"image": x.numpy()})
            value_feeds.append({"image": x.numpy(), "f16": f16.numpy(), "masks": mask.numpy()})

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    out = {}
    for name, feeds in (("key", key_feeds), ("value", value_feeds)):
        pre = paths[name].with_suffix(".pre.onnx")
        quant_pre_process(str(paths[name]), str(pre), skip_symbolic_shape=True)
        out[name] = paths[name].with_suffix(".int8.onnx")
        quantize_static(str(pre), str(out[name]), Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        print(f"quantised {name} encoder on {len(feeds)} calibration frames -> {out[name]}", flush=True)
    return out


def session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def speed(model: torch.nn.Module, fp32: dict[str, Path], int8: dict[str, Path], frame: np.ndarray,
          mask: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    eng = InferenceEngine(model, InferenceConfig(precision="fp32", resolution=None), device="cpu")
    x = _net_input(frame)
    xcl = x.contiguous(memory_format=torch.channels_last)
    masks, _ = pad_divide_by(torch.from_numpy(np.stack([mask == 1, mask == 2])).float()[None], 16)
    with torch.inference_mode():
        f16 = eng.net.encode_key(xcl).f16
    sessions = {"ort fp32": {k: session(p) for k, p in fp32.items()}, "ort int8": {k: session(p) for k, p in int8.items()}}
    feeds = {"key": {"image": x.numpy()}, "value": {"image": x.numpy(), "f16": f16.contiguous().numpy(),
                                                     "masks": masks.numpy()}}

    def torch_key() -> None:
        with torch.inference_mode():
            eng.net.encode_key(xcl)

    def torch_value() -> None:
        with torch.inference_mode():
            eng.net.encode_value(xcl, f16, masks)

    runs: dict[str, dict[str, list[float]]] = {}
    calls = {("torch fast path fp32", "key"): torch_key, ("torch fast path fp32", "value"): torch_value}
    for impl, ss in sessions.items():
        for k, s in ss.items():
            calls[(impl, k)] = (lambda s=s, k=k: s.run(None, feeds[k]))
    for f in calls.values():
        f()  # warm-up
    for _ in range(rounds):
        for (impl, k), f in calls.items():
            c = time.process_time()
            f()
            runs.setdefault(impl, {}).setdefault(k, []).append(time.process_time() - c)
    return {impl: {k: statistics.median(v) for k, v in r.items()} for impl, r in runs.items()}


def _patch(eng: InferenceEngine, sess: dict) -> None:  # type: ignore[type-arg]
    """The engine's encoders replaced by onnxruntime sessions (on its network copy, for this process)."""
    key_s, value_s = sess["key"], sess["value"]

    def encode_key(x: torch.Tensor) -> KeyFeatures:
        outs = key_s.run(None, {"image": x.float().contiguous().numpy()})
        return KeyFeatures(*(torch.from_numpy(o) for o in outs))

    def encode_value(image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        outs = value_s.run(None, {"image": image.float().contiguous().numpy(), "f16": f16.float().contiguous().numpy(),
                                  "masks": masks.float().contiguous().numpy()})
        return torch.from_numpy(outs[0])

    eng.net.encode_key = encode_key  # type: ignore[method-assign]
    eng.net.encode_value = encode_value  # type: ignore[method-assign]


def _run(model: torch.nn.Module, frames: list[np.ndarray], first: np.ndarray, sess: dict | None  # type: ignore[type-arg]
         ) -> np.ndarray:
    cfg = InferenceConfig.preset("davis2016").replace(top_k=20, mem_every=5, resolution=480, precision="fp32")
    eng = InferenceEngine(model, cfg, device="cpu")
    saved = dict(eng.net.__dict__)
    if sess is not None:
        _patch(eng, sess)
    out = []
    try:
        with torch.inference_mode():
            for i, f in enumerate(frames):
                p = eng.step(f, first if i == 0 else None, is_last=i == len(frames) - 1)
                out.append(eng.probs_to_labels(p).numpy().astype(np.uint8))
    finally:
        for k in ("encode_key", "encode_value"):
            eng.net.__dict__.pop(k, None)
        assert eng.net.__dict__.keys() == saved.keys()
    return np.stack(out)


def masks_check(model: torch.nn.Module, int8: dict[str, Path], root: Path, seqs: list[str]) -> dict[str, dict]:  # type: ignore[type-arg]
    from rdevos.eval.metrics import db_eval_boundary, db_eval_iou

    def jf(pred: np.ndarray, gts: list[np.ndarray]) -> float:
        idx = range(1, len(gts) - 1)
        j = np.mean([db_eval_iou(gts[i], pred[i] > 0) for i in idx])
        f = np.mean([db_eval_boundary(pred[i] > 0, gts[i]) for i in idx])
        return float(100 * (j + f) / 2)

    sess = {k: session(p) for k, p in int8.items()}
    report = {}
    for seq in seqs:
        frames, gts = _frames(root, seq)
        ref = _run(model, frames, gts[0], None)
        got = _run(model, frames, gts[0], sess)
        a, b = jf(ref, gts), jf(got, gts)
        report[seq] = {"jf_fp32": a, "jf_int8": b, "d": b - a, "agree": float((ref == got).mean())}
        print(f"{seq:18s} J&F fp32 {a:6.2f} int8 {b:6.2f} ({b - a:+.2f}), labels equal {100 * (ref == got).mean():.3f} %",
              flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=_root())
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rdevos-int8")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--sequences", default=",".join(HELD_OUT))
    ap.add_argument("--calibration", default="bear,bmx-bumps,bus,car-turn,dance-jump,elephant,flamingo,hockey,"
                                             "lucia,paragliding,rhino,surf")
    ap.add_argument("--no-masks", action="store_true", help="speed only")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model, progress=False)
    args.work.mkdir(parents=True, exist_ok=True)
    fp32 = export(model, args.work)
    int8 = quantize(fp32, model, args.root, args.calibration.split(","))
    frames, gts = _frames(args.root, "boat", every=1)
    mask = np.zeros_like(gts[0])
    fg = gts[0] > 0
    xs = np.nonzero(fg)[1]
    mid = (xs.min() + xs.max()) // 2
    mask[:, :mid][fg[:, :mid]] = 1
    mask[:, mid:][fg[:, mid:]] = 2
    sp = speed(model, fp32, int8, frames[10], mask, args.rounds)
    from rdevos.eval.bench import _cpu_name

    print(f"CPU s per call, 1 thread, 864x480 input, 2 objects for the value encoder ({_cpu_name()}):")
    for impl, r in sp.items():
        print(f"  {impl:22s} key encoder {r['key']:.3f}  value encoder {r['value']:.3f}")
    report: dict[str, object] = {"speed_cpu_s": sp, "cpu": _cpu_name(), "size": SIZE}
    if not args.no_masks:
        m = masks_check(model, int8, args.root, args.sequences.split(","))
        d = np.array([x["d"] for x in m.values()])
        a = np.array([x["agree"] for x in m.values()])
        print(f"held-out: mean J&F change {d.mean():+.3f}, max |change| {np.abs(d).max():.2f}; labels equal mean "
              f"{100 * a.mean():.3f} %, lowest {100 * a.min():.3f} %")
        report["masks"] = m
        report["summary"] = {"mean_jf_change": float(d.mean()), "max_abs_jf_change": float(np.abs(d).max()),
                             "labels_equal_mean": float(a.mean()), "labels_equal_min": float(a.min())}
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
