"""SOLOv2Decoder: masks pasted piece by piece, the features mode, live settings.

The reference for the masks is the decoder's formula before it pasted piece by
piece: all `D` probability maps resized at once as channels (the whole
`(batch, H, W, D)` float tensor), thresholded and transposed, with the boxes
read off the masks in numpy. Pieces must reproduce it bit for bit.
"""

import json
import textwrap

import numpy as np
import pytest
from helpers import run_on_jax, tiny_model
from keras import ops

from keras_solov2.layers import SOLOv2Decoder
from keras_solov2.layers.spatial import resize
from keras_solov2.models.solov2.mask_paste import masks_to_boxes, paste_masks
from keras_solov2.models.solov2.point_nms import point_nms

GRIDS = (4, 2)
FEATURES = (8, 10)  # mask features; the padded input is 32 x 40
# (resized_size, original_size): up by a non-integer factor, down, identity.
SIZES = [((30, 37), (61, 75)), ((32, 40), (20, 23)), ((25, 40), (25, 40))]


def old_masks(probs, resized_size, original_size, threshold=0.5, stride=4):
    """The masks as the decoder computed them before: all maps at once."""
    _, _, h, w = probs.shape
    x = ops.transpose(ops.convert_to_tensor(probs), (0, 2, 3, 1))
    x = resize(x, (h * stride, w * stride), "bilinear")
    x = x[:, : resized_size[0], : resized_size[1], :]
    x = resize(x, tuple(original_size), "bilinear")
    return ops.transpose(x > threshold, (0, 3, 1, 2))


def numpy_boxes(masks):
    """Tight pixel-edge boxes, zeros for empty masks."""
    masks = np.asarray(masks)
    boxes = np.zeros(masks.shape[:2] + (4,), "float32")
    for index in np.ndindex(*masks.shape[:2]):
        rows = np.flatnonzero(masks[index].any(axis=1))
        cols = np.flatnonzero(masks[index].any(axis=0))
        if rows.size:
            boxes[index] = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    return boxes


def old_formula(probs, resized_size, original_size, threshold=0.5, stride=4):
    """Masks and boxes as the decoder computed them before."""
    probs = np.asarray(probs, "float32")
    masks = np.asarray(old_masks(probs, resized_size, original_size, threshold, stride))
    return masks, numpy_boxes(masks)


def dense_outputs(seed=0, batch=2, classes=3, channels=4):
    """Random dense outputs; image 1 has fewer confident cells than image 0."""
    rng = np.random.default_rng(seed)
    cells = sum(s * s for s in GRIDS)
    logits = rng.normal(-1.0, 2.0, (batch, cells, classes)).astype("float32")
    logits[1:] -= 4.5
    kernels = rng.normal(0.0, 1.0, (batch, cells, channels)).astype("float32")
    features = rng.normal(0.0, 1.0, (batch, *FEATURES, channels)).astype("float32")
    return logits, kernels, features


def decoder(**kwargs):
    kwargs.setdefault("strides", (1, 1))
    kwargs.setdefault("max_detections", 7)
    return SOLOv2Decoder(num_grids=GRIDS, **kwargs)


def sized(resized_size, original_size):
    return {"resized_size": resized_size, "original_size": original_size}


def numpy_dict(out):
    return {k: np.asarray(v) for k, v in out.items()}


def check_against_old_formula(layer, inputs, resized_size, original_size):
    """Runs `layer` in both modes; returns the original-size outputs."""
    mode = layer.mask_resolution
    layer.mask_resolution = "features"
    low = numpy_dict(layer(*inputs, **sized(resized_size, original_size)))
    layer.mask_resolution = "original"
    out = numpy_dict(layer(*inputs, **sized(resized_size, original_size)))
    layer.mask_resolution = mode
    masks, boxes = old_formula(
        low["mask_probs"],
        resized_size,
        original_size,
        layer.mask_threshold,
        layer.mask_stride,
    )
    assert out["masks"].dtype == bool
    np.testing.assert_array_equal(out["masks"], masks)
    np.testing.assert_array_equal(out["boxes"], boxes)
    for key in ("labels", "scores", "num_detections", "candidates_overflow"):
        np.testing.assert_array_equal(out[key], low[key])
    pasted = paste_masks(
        low["mask_probs"],
        resized_size,
        original_size,
        mask_threshold=layer.mask_threshold,
        mask_stride=layer.mask_stride,
        num_detections=low["num_detections"],
    )
    np.testing.assert_array_equal(np.asarray(pasted), out["masks"])
    return out


@pytest.mark.parametrize("resized_size, original_size", SIZES)
def test_pieces_equal_the_old_formula(resized_size, original_size):
    out = check_against_old_formula(
        decoder(), dense_outputs(), resized_size, original_size
    )
    n = out["num_detections"]
    # Not vacuous: one image fills all 7 slots (two pieces of 4, the second
    # starting early), the other leaves padding slots, which stay empty.
    assert n[0] == 7 and 0 < n[1] < 7, n
    assert out["masks"][0].any(axis=(1, 2)).all()
    assert not out["masks"][1, n[1] :].any()
    assert not out["boxes"][1, n[1] :].any()
    assert (out["labels"][1, n[1] :] == -1).all()


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 50])
def test_paste_masks_any_chunk_size(chunk_size):
    rng = np.random.default_rng(1)
    probs = rng.random((2, 7, *FEATURES)).astype("float32")
    counts = np.array([7, 3], "int32")
    resized_size, original_size = SIZES[0]
    masks, boxes = old_formula(probs, resized_size, original_size)
    got, got_boxes = paste_masks(
        probs, resized_size, original_size, chunk_size=chunk_size, return_boxes=True
    )
    np.testing.assert_array_equal(np.asarray(got), masks)
    np.testing.assert_array_equal(np.asarray(got_boxes), boxes)
    # Slots from num_detections on are empty even where probs are not zero.
    got = np.asarray(
        paste_masks(
            probs,
            resized_size,
            original_size,
            num_detections=counts,
            chunk_size=chunk_size,
        )
    )
    np.testing.assert_array_equal(got[0], masks[0])
    np.testing.assert_array_equal(got[1, :3], masks[1, :3])
    assert not got[1, 3:].any()


def test_masks_to_boxes_on_uint8_and_bool():
    masks = np.zeros((2, 5, 6), "uint8")
    masks[0, 1:3, 2:6] = 1
    masks[1, 4, 0] = 3
    expected = [[2, 1, 6, 3], [0, 4, 1, 5]]
    for m in (masks, masks.astype(bool)):
        np.testing.assert_array_equal(np.asarray(masks_to_boxes(m)), expected)
    np.testing.assert_array_equal(
        np.asarray(masks_to_boxes(np.zeros((1, 3, 4), bool))), [[0, 0, 0, 0]]
    )


def test_graph_xla_and_dynamic_sizes_equal_eager():
    import tensorflow as tf

    inputs = dense_outputs()
    resized_size, original_size = SIZES[0]
    sizes = sized(resized_size, original_size)
    layer, low_layer = decoder(), decoder(mask_resolution="features")
    eager = numpy_dict(layer(*inputs, **sizes))

    def run(*args):
        low = low_layer(*args, **sizes)["mask_probs"]
        return layer(*args, **sizes), old_masks(low, resized_size, original_size)

    graph, reference = tf.function(run)(*inputs)
    for key, value in numpy_dict(graph).items():
        np.testing.assert_array_equal(value, eager[key], err_msg=key)
    # XLA: its own float rounding upstream (scores within 1e-6), but the
    # pieces still equal the old formula compiled the same way.
    xla, reference = tf.function(run, jit_compile=True)(*inputs)
    xla = numpy_dict(xla)
    np.testing.assert_array_equal(xla["masks"], np.asarray(reference))
    np.testing.assert_array_equal(xla["boxes"], numpy_boxes(reference))
    np.testing.assert_allclose(xla["scores"], eager["scores"], atol=1e-6)
    np.testing.assert_array_equal(xla["labels"], eager["labels"])

    # A predict function retraced for a new image size has dynamic sizes.
    spec = tf.TensorSpec((), tf.int32)

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 7, None, None), tf.float32),
            spec,
            spec,
            spec,
            spec,
        ]
    )
    def dynamic(probs, rh, rw, oh, ow):
        return paste_masks(probs, (rh, rw), (oh, ow), return_boxes=True)

    layer.mask_resolution = "features"
    probs = layer(*inputs, **sized(resized_size, original_size))["mask_probs"]
    masks, boxes = dynamic(probs, *resized_size, *original_size)
    np.testing.assert_array_equal(np.asarray(masks), eager["masks"])
    np.testing.assert_array_equal(np.asarray(boxes), eager["boxes"])


def test_feature_boxes_approximate_the_exact_ones():
    inputs = dense_outputs()
    for resized_size, original_size in SIZES:
        layer = decoder()
        exact = numpy_dict(layer(*inputs, **sized(resized_size, original_size)))
        layer.mask_resolution = "features"
        low = numpy_dict(layer(*inputs, **sized(resized_size, original_size)))
        scale = max(o / r for o, r in zip(original_size, resized_size, strict=True))
        n = exact["num_detections"]
        for b in range(len(n)):
            error = np.abs(low["boxes"][b, : n[b]] - exact["boxes"][b, : n[b]])
            assert error.max() <= layer.mask_stride * scale + 1, error
            assert not low["boxes"][b, n[b] :].any()


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


# -------------------------------------------------------------------- JAX
JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    sys.path.insert(0, os.path.join(os.getcwd(), "tests", "models", "solov2"))
    import jax, keras, numpy as np
    assert keras.backend.backend() == "jax"
    import test_decoder as t
    inputs = t.dense_outputs()
    for resized_size, original_size in t.SIZES:
        layer = t.decoder()
        eager = t.check_against_old_formula(layer, inputs, resized_size, original_size)
        sizes = t.sized(resized_size, original_size)
        jitted = jax.jit(lambda *a: layer(*a, **sizes))(*inputs)
        for key, value in t.numpy_dict(jitted).items():
            if value.dtype.kind == "f":
                # XLA may fuse a multiply-add (the Gaussian decay): 1 ulp.
                np.testing.assert_allclose(value, eager[key], rtol=1e-6, err_msg=key)
            else:
                np.testing.assert_array_equal(value, eager[key], err_msg=key)
    print("JAX-DECODER-OK")
    """
)


@pytest.mark.slow
@pytest.mark.jax
def test_same_masks_on_jax_eager_and_jit():
    assert "JAX-DECODER-OK" in run_on_jax(JAX_SCRIPT)


def test_candidates_overflow_is_zero_exactly_when_the_caps_changed_nothing():
    """The caps' certificate against decoding every candidate.

    Over random images and caps: wherever `candidates_overflow` is 0, the
    capped decoder's detections equal the uncapped ones; the caps do cut
    candidates in some of those images (the bound is not just "no cap
    reached"), and elsewhere they change the result, which is then flagged.
    """
    everything = decoder(
        max_candidates=60, pre_nms_top_k=60, mask_resolution="features"
    )
    exact_despite_cut = changed = 0
    for seed in range(12):
        inputs = dense_outputs(seed=seed)
        sizes = sized((32, 40), (32, 40))
        want = numpy_dict(everything(*inputs, **sizes))
        assert (want["candidates_overflow"] == 0).all()
        scores = point_nms(ops.sigmoid(inputs[0]), GRIDS)
        above = (np.asarray(scores) > 0.1).sum(axis=(1, 2))
        for caps in ((4, 3), (8, 4), (16, 6), (24, 12)):
            layer = decoder(
                max_candidates=caps[0],
                pre_nms_top_k=caps[1],
                mask_resolution="features",
            )
            got = numpy_dict(layer(*inputs, **sizes))
            for b in range(2):
                same = (
                    np.array_equal(got["labels"][b], want["labels"][b])
                    and np.allclose(got["scores"][b], want["scores"][b], atol=1e-6)
                    and np.allclose(got["mask_probs"][b], want["mask_probs"][b])
                )
                if got["candidates_overflow"][b] == 0:
                    assert same, (seed, caps, b)
                    exact_despite_cut += int(above[b] > caps[1])
                changed += int(not same)
    assert exact_despite_cut >= 3, exact_despite_cut
    assert changed >= 3, changed
