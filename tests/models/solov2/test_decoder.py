"""SOLOv2Decoder: masks pasted piece by piece and the features mode.

The reference for the masks (decoder_reference.py) is the decoder's formula
before it pasted piece by piece: all `D` probability maps resized at once as
channels (the whole `(batch, H, W, D)` float tensor), thresholded and
transposed, with the boxes read off the masks in numpy. Pieces must reproduce
it bit for bit. The live settings are in test_decoder_settings.py.
"""

import textwrap

import numpy as np
import pytest
from decoder_reference import (
    FEATURES,
    GRIDS,
    SIZES,
    check_against_old_formula,
    decoder,
    dense_outputs,
    numpy_boxes,
    numpy_dict,
    old_formula,
    old_masks,
    sized,
)
from helpers import run_on_jax
from keras import ops

from keras_solov2.models.solov2.mask_paste import masks_to_boxes, paste_masks
from keras_solov2.models.solov2.point_nms import point_nms


@pytest.mark.parametrize("resized_size, original_size", SIZES)
def test_pieces_equal_the_old_formula(resized_size, original_size):
    out = check_against_old_formula(
        decoder(), dense_outputs(), resized_size, original_size
    )
    n = out["num_detections"]
    # Not vacuous: one image fills all 7 slots (pieces of 2, the last one
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


def test_eager_paste_traces_once_for_every_photo_size():
    """Called eagerly (the export runtime, `evaluate`), the paste runs as one
    TensorFlow graph whose sizes are inputs: a new photo size is not a new
    trace, and each size still equals the old formula."""
    from keras_solov2.models.solov2 import mask_paste

    probs = np.random.default_rng(4).random((1, 5, *FEATURES)).astype("float32")
    # Settings no other test uses, so that this trace is this test's own.
    threshold, chunk_size = 0.375, 3
    for resized_size, original_size in SIZES:
        masks, boxes = old_formula(probs, resized_size, original_size, threshold)
        got, got_boxes = paste_masks(
            probs,
            resized_size,
            original_size,
            mask_threshold=threshold,
            num_detections=np.array([5]),
            chunk_size=chunk_size,
            return_boxes=True,
        )
        np.testing.assert_array_equal(np.asarray(got), masks)
        np.testing.assert_array_equal(np.asarray(got_boxes), boxes)
    traced = mask_paste._traced_paste(5, "float32", True, threshold, 4, chunk_size)
    assert traced.experimental_get_tracing_count() == 1


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


# -------------------------------------------------------------------- JAX
JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    sys.path.insert(0, os.path.join(os.getcwd(), "tests", "models", "solov2"))
    import jax, keras, numpy as np
    assert keras.backend.backend() == "jax"
    import decoder_reference as t
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
