"""SOLOv2Decoder's live settings: each one used by the next call, kept by the
config, checked when set, and reached from the model."""

import json

import numpy as np
import pytest
from decoder_reference import (
    FEATURES,
    GRIDS,
    SIZES,
    check_against_old_formula,
    decoder,
    dense_outputs,
    numpy_dict,
    sized,
)
from helpers import tiny_model

from keras_solov2.layers import SOLOv2Decoder
from keras_solov2.models.solov2.mask_paste import paste_masks


# ------------------------------------------------------------ live settings
def test_every_setting_is_used_by_the_next_call_and_kept_by_the_config():
    inputs = dense_outputs()
    sizes = sized(*SIZES[0])
    layer = decoder()
    base = numpy_dict(layer(*inputs, **sizes))
    n = base["num_detections"]

    def changed(name, value):
        layer = decoder()
        layer(*inputs, **sizes)  # built and called with the old value
        setattr(layer, name, value)
        out = numpy_dict(layer(*inputs, **sizes))
        clone = SOLOv2Decoder.from_config(json.loads(json.dumps(layer.get_config())))
        assert getattr(clone, name) == getattr(layer, name)
        again = numpy_dict(clone(*inputs, **sizes))
        assert sorted(again) == sorted(out)
        for key in out:
            np.testing.assert_array_equal(again[key], out[key], err_msg=key)
        return out

    for name, value in (("score_threshold", 0.6), ("filter_threshold", 0.55)):
        fewer = changed(name, value)["num_detections"]
        assert (fewer <= n).all() and fewer.sum() < n.sum(), (name, fewer, n)
    out = changed("max_candidates", 2)
    assert (out["num_detections"] <= 2).all() and (out["candidates_overflow"] > 0).all()
    out = changed("pre_nms_top_k", 1)
    np.testing.assert_array_equal(out["num_detections"], [1, 1])
    out = changed("max_detections", 3)
    assert out["masks"].shape == (2, 3, *sizes["original_size"]) and out[
        "scores"
    ].shape == (2, 3)
    for name, value in (("nms_kernel", "linear"), ("nms_sigma", 0.5)):
        out = changed(name, value)
        np.testing.assert_array_equal(out["scores"][:, 0], base["scores"][:, 0])
        assert not np.array_equal(out["scores"], base["scores"]), name
    out = changed("strides", (10_000, 10_000))  # no mask is that large
    np.testing.assert_array_equal(out["num_detections"], [0, 0])
    out = changed("mask_threshold", 0.8)
    assert out["masks"].sum() < base["masks"].sum()
    check_against_old_formula(layer_with(mask_threshold=0.8), inputs, *SIZES[0])
    # mask_stride is the backbone's, fixed at construction (not a setting).
    check_against_old_formula(decoder(mask_stride=2), inputs, (15, 19), (33, 41))
    out = changed("mask_resolution", "features")
    assert out["mask_probs"].shape == (2, 7, *FEATURES) and "masks" not in out


def layer_with(**settings):
    layer = decoder()
    for name, value in settings.items():
        setattr(layer, name, value)
    return layer


def test_nms_settings_reach_matrix_nms():
    layer = decoder(nms_kernel="linear", nms_sigma=3, pre_nms_top_k=9)
    nms = layer.matrix_nms
    assert (nms.kernel, nms.sigma, nms.pre_nms_top_k, nms.max_detections) == (
        "linear",
        3.0,
        9,
        7,
    )
    layer.filter_threshold = 0.25
    layer.max_detections = 4
    assert (nms.filter_threshold, nms.max_detections) == (0.25, 4)


@pytest.mark.parametrize(
    "name, value",
    [
        ("score_threshold", 1.5),
        ("score_threshold", "0.1"),
        ("mask_threshold", -0.1),
        ("filter_threshold", True),
        ("nms_sigma", 0.0),
        ("nms_sigma", float("nan")),
        ("max_candidates", 0),
        ("pre_nms_top_k", 2.5),
        ("max_detections", -1),
        ("nms_kernel", "box"),
        ("mask_resolution", "stride4"),
        ("strides", (8, 8, 16)),
        ("strides", (8, 0)),
        ("strides", 8),
    ],
)
def test_invalid_settings_name_the_argument(name, value):
    with pytest.raises(ValueError, match=f"`{name}`"):
        decoder(**{name: value})
    layer = decoder()
    before = getattr(layer, name)
    with pytest.raises(ValueError, match=f"`{name}`"):
        setattr(layer, name, value)
    assert getattr(layer, name) == before


def test_mask_stride_is_checked_at_construction():
    assert "mask_stride" not in SOLOv2Decoder.SETTINGS
    for value in (True, 0, 2.5):
        with pytest.raises(ValueError, match="`mask_stride`"):
            decoder(mask_stride=value)
    assert (
        SOLOv2Decoder.from_config(decoder(mask_stride=8).get_config()).mask_stride == 8
    )


def test_num_grids_and_cells_are_checked():
    with pytest.raises(ValueError, match="`num_grids`"):
        SOLOv2Decoder(num_grids=())
    logits, kernels, features = dense_outputs()
    with pytest.raises(ValueError, match="cells"):
        decoder()(
            logits[:, :-1],
            kernels[:, :-1],
            features,
            **sized(*SIZES[0]),
        )


def test_settings_and_config():
    layer = decoder(mask_resolution="features", nms_sigma=1)
    assert SOLOv2Decoder.SETTINGS == tuple(layer.settings())
    config = layer.get_config()
    assert config["num_grids"] == GRIDS and config["nms_sigma"] == 1.0
    assert config["mask_resolution"] == "features"
    clone = SOLOv2Decoder.from_config(json.loads(json.dumps(config)))
    assert clone.settings() == layer.settings()
    assert clone.matrix_nms.sigma == 1.0


def test_model_settings_reach_the_decoder():
    model = tiny_model(score_threshold=0.0, max_detections=5)
    image = np.random.default_rng(0).integers(0, 255, (1, 45, 61, 3), "uint8")
    out = model.predict(image, verbose=0)
    assert out["masks"].shape == (1, 5, 45, 61)
    model.max_detections = 3
    model.mask_resolution = "features"
    low = model.predict(image, verbose=0)
    assert model.decoder.max_detections == 3
    assert low["mask_probs"].shape[:2] == (1, 3) and "masks" not in low
    masks = paste_masks(
        low["mask_probs"],
        model.image_converter.resized_size(45, 61),
        (45, 61),
        num_detections=low["num_detections"],
    )
    np.testing.assert_array_equal(np.asarray(masks), out["masks"][:, :3])
