from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rdevos import InputError, ModelNotFoundError, masks_visualization, pipeline
from rdevos.model.network import RDEVOS


def _inputs(clip, n: int = 4) -> tuple[list[Image.Image], Image.Image]:
    frames, mask = clip
    pal = Image.fromarray(mask)
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [128] * (253 * 3))
    return [Image.fromarray(f) for f in frames[:n]], pal


def test_pipeline_returns_user_labels_at_input_size(tiny_model: RDEVOS, clip) -> None:
    images, mask = _inputs(clip)
    seg = pipeline("video-object-segmentation", model=tiny_model, resolution=160)
    out = seg({"images": images, "mask": mask})["masks"]
    assert out.dtype == np.uint8 and out.shape == (4, 240, 427)
    assert set(np.unique(out)) <= {0, 3, 7}
    # ModelScope's numbering: indices of the sorted labels.
    ms = pipeline(model=tiny_model, resolution=160, modelscope_labels=True)({"images": images, "mask": mask})["masks"]
    np.testing.assert_array_equal(ms, np.select([out == 3, out == 7], [1, 2], 0))
    vis = masks_visualization(out, mask.getpalette())
    assert len(vis) == 4 and vis[0].mode == "P" and vis[0].getpalette()[:9] == mask.getpalette()[:9]


def test_pipeline_converts_rgba_and_grey_frames(tiny_model: RDEVOS, clip) -> None:
    images, mask = _inputs(clip, 3)
    images = [images[0].convert("RGBA"), images[1].convert("L"), images[2]]
    out = pipeline(model=tiny_model, resolution=None)({"images": images, "mask": mask.convert("L")})["masks"]
    assert out.shape[0] == 3


def test_pipeline_bad_inputs(tiny_model: RDEVOS, clip) -> None:
    images, mask = _inputs(clip, 3)
    seg = pipeline(model=tiny_model, resolution=None)
    cases = [
        ({"images": [], "mask": mask}, "no frames"),
        ({"images": images, "mask": mask.convert("CMYK")}, "CMYK image"),
        ({"images": images, "mask": mask.resize((100, 100))}, r"100x100 \(HxW\) but the frames are 240x427"),
        ({"images": images, "mask": Image.new("P", mask.size)}, "no object"),
        ({"images": images[:2] + [images[2].resize((100, 100))], "mask": mask}, "frame 2 has size"),
        ({"frames": images}, "keys 'images'"),
    ]
    for inputs, words in cases:
        with pytest.raises(InputError, match=words):
            seg(inputs)
    with pytest.raises(InputError, match="unsupported task"):
        pipeline("image-classification", model=tiny_model)


def test_pipeline_takes_what_segment_mask_takes(tiny_model: RDEVOS, clip, caplog: pytest.LogCaptureFixture) -> None:
    """The CLI's mask rule (validate_mask): an RGB (colour-coded) mask and a mask a pixel off the frame size."""
    from rdevos.io.masks import DAVIS_PALETTE

    images, mask = _inputs(clip, 3)
    seg = pipeline(model=tiny_model, resolution=None)
    ref = seg({"images": images, "mask": mask})["masks"]
    davis = mask.copy()
    davis.putpalette(DAVIS_PALETTE)
    np.testing.assert_array_equal(seg({"images": images, "mask": davis.convert("RGB")})["masks"], ref)
    own = mask.copy()
    own.putpalette([0, 0, 0] * 3 + [200, 30, 10] + [0, 0, 0] * 3 + [10, 30, 200])  # not DAVIS colours: ids 1, 2
    colours = seg({"images": images, "mask": own.convert("RGB")})["masks"]
    assert set(np.unique(colours)) <= {0, 1, 2}
    assert abs(int((colours > 0).sum()) - int((ref > 0).sum())) < 0.01 * ref.size
    with caplog.at_level("WARNING", logger="rdevos.io.masks"):
        near = seg({"images": images, "mask": mask.resize((426, 240), Image.NEAREST)})["masks"]
    assert "the mask is 240x426 (HxW), the frames 240x427: resized" in caplog.text
    assert near.shape == ref.shape and (near == ref).mean() > 0.99


def test_pipeline_without_model_names_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    import rdevos.hub.registry as reg

    spec = reg.REGISTRY[reg.DEFAULT_MODEL]
    monkeypatch.setitem(reg.REGISTRY, reg.DEFAULT_MODEL, type(spec)(**{**spec.__dict__, "resource": "assets/none.pt"}))
    with pytest.raises(ModelNotFoundError, match="embedded model"):
        pipeline("video-object-segmentation")


def test_a_named_preset_applies_with_the_default_model(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 25 (6): pipeline(preset='davis2017') with the embedded model still ran top-k 20, memory every 5th frame
    at 480p (the model's own settings won). The rule: explicit > named preset > model's defaults > library's."""
    from rdevos import InferenceConfig, load_model

    model = load_model()
    assert model.inference_defaults == {"resolution": 540, "top_k": 20, "mem_every": 10}  # chosen for rdevos-lite3
    own = pipeline(model=model).config
    assert (own.top_k, own.mem_every, own.resolution) == (20, 10, 540)
    with caplog.at_level("INFO", logger="rdevos.config"):
        named = pipeline(model=model, preset="davis2017").config
    assert (named.top_k, named.mem_every, named.resolution) == (40, 3, None)
    assert "top_k 40" in caplog.text and "preset davis2017" in caplog.text and "model's own" in caplog.text
    yt = pipeline(model=model, preset="youtubevos").config
    assert (yt.top_k, yt.mem_every, yt.resolution, yt.schedule.value) == (20, 4, 480, "relative")
    both = pipeline(model=model, preset="davis2017", top_k=10, resolution=360).config
    assert (both.top_k, both.mem_every, both.resolution) == (10, 3, 360)
    # the rule itself, without a model
    assert InferenceConfig.for_model(None) == InferenceConfig()
    assert InferenceConfig.for_model({"mem_every": 5}, "modelscope").mem_every == 4
    assert InferenceConfig.for_model({"mem_every": 5}, None, mem_every=2).mem_every == 2
