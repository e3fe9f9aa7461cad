"""Layer shapes, serialisation and numerics against independent math."""

import keras
import numpy as np
import pytest
from helpers import tiny_model

from keras_solov2.layers import (
    FeaturePyramid,
    GroupNormalization4D,
    KernelCategoryHead,
    MaskFeatureHead,
    SOLOv2Decoder,
    masks_to_boxes,
    point_nms,
)
from keras_solov2.layers.spatial import coordinate_channels
from keras_solov2.models.resnet import resnet_features
from keras_solov2.utils.image_geometry import rescale_size


def roundtrip(layer, *inputs, **kwargs):
    """Same outputs from a layer rebuilt from its config with its weights."""
    out = layer(*inputs, **kwargs)
    clone = layer.__class__.from_config(layer.get_config())
    clone(*inputs, **kwargs)
    clone.set_weights(layer.get_weights())
    again = clone(*inputs, **kwargs)
    for a, b in zip(keras.tree.flatten(out), keras.tree.flatten(again), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    return out


def test_group_norm_matches_numpy_and_keras():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (2, 5, 7, 64)).astype("float32")
    layer = GroupNormalization4D(groups=8)
    layer.build(x.shape)
    gamma = rng.uniform(0.5, 1.5, 64).astype("float32")
    beta = rng.normal(0, 0.2, 64).astype("float32")
    layer.set_weights([gamma, beta])
    got = np.asarray(roundtrip(layer, x))
    g = x.reshape(2, 35, 8, 8)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    expected = ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * gamma + beta
    np.testing.assert_allclose(got, expected, atol=2e-5)
    reference = keras.layers.GroupNormalization(groups=8, epsilon=1e-5)
    reference.build(x.shape)
    reference.set_weights([gamma, beta])
    np.testing.assert_allclose(got, np.asarray(reference(x)), atol=2e-5)
    with pytest.raises(ValueError, match="divisible"):
        GroupNormalization4D(groups=5).build((1, 4, 4, 64))


def test_group_norm_float16_safe_statistics_equal_the_plain_formula():
    """The form the exporters trace (scaled by each group's peak, means as
    2x2 average pools) gives float64 numpy's group norm in float32, on
    sizes that pool unevenly, and 0 + beta for a constant group."""
    from keras_solov2.layers.group_normalization import float16_safe_statistics

    rng = np.random.default_rng(1)
    for shape in [(1, 112, 152, 64), (2, 25, 34, 32), (1, 4, 4, 64)]:
        scale = rng.uniform(0.1, 10, shape[-1])
        x = (rng.normal(300, 50, shape) * scale).astype("float32")
        x[..., :2] = 7.0  # group 0 is constant
        layer = GroupNormalization4D(groups=32)
        layer.build(shape)
        beta = rng.normal(0, 0.2, shape[-1]).astype("float32")
        layer.set_weights([np.ones(shape[-1], "float32"), beta])
        with float16_safe_statistics():
            got = np.asarray(layer(x))
        g = x.astype("float64").reshape(shape[0], -1, 32, shape[-1] // 32)
        normal = (g - g.mean(axis=(1, 3), keepdims=True)) / np.sqrt(
            g.var(axis=(1, 3), keepdims=True) + 1e-5
        )
        expected = normal.reshape(shape) + beta
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_array_equal(
            got[..., :2], np.broadcast_to(beta[:2], got[..., :2].shape)
        )


def test_coordinates_are_linspace_x_then_y():
    coords = np.asarray(coordinate_channels(np.zeros((1, 3, 5, 4), "float32")))
    np.testing.assert_allclose(coords[0, 1, :, 0], np.linspace(-1, 1, 5), atol=1e-6)
    np.testing.assert_allclose(coords[0, :, 2, 1], np.linspace(-1, 1, 3), atol=1e-6)


def test_stem_uses_pytorch_symmetric_padding():
    # Keras "same" pads stride-2 convs asymmetrically; the port pads 3 on
    # every side like PyTorch. Check the stem conv against a numpy conv.
    inputs = keras.Input((18, 22, 3))
    features = resnet_features(
        inputs, depth=18, stage_blocks=(1, 1, 1, 1), base_channels=8
    )
    full = keras.Model(inputs, features)
    stem = keras.Model(inputs, full.get_layer("backbone_conv1").output)
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(7, 7, 3, 8)).astype("float32")
    full.get_layer("backbone_conv1").set_weights([kernel])
    x = rng.normal(size=(1, 18, 22, 3)).astype("float32")
    got = np.asarray(stem(x))
    xp = np.pad(x[0], ((3, 3), (3, 3), (0, 0)))
    out_h, out_w = (18 + 6 - 7) // 2 + 1, (22 + 6 - 7) // 2 + 1
    expected = np.zeros((out_h, out_w, 8), np.float32)
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[2 * i : 2 * i + 7, 2 * j : 2 * j + 7]
            expected[i, j] = np.tensordot(patch, kernel, axes=3)
    assert got.shape[1:3] == (9, 11)  # PyTorch: floor((H + 6 - 7) / 2) + 1
    np.testing.assert_allclose(got[0], expected, atol=1e-4)


def test_pyramid_and_heads_shapes_and_serialisation():
    rng = np.random.default_rng(2)
    feats = [
        rng.normal(size=(1, 64 // s, 96 // s, c)).astype("float32")
        for s, c in ((4, 16), (8, 32), (16, 64), (32, 128))
    ]
    pyramid = roundtrip(FeaturePyramid(32), feats)
    assert [tuple(p.shape) for p in pyramid] == [
        (1, 16, 24, 32), (1, 8, 12, 32), (1, 4, 6, 32), (1, 2, 3, 32), (1, 1, 2, 32)
    ]  # fmt: skip
    mask_features = roundtrip(MaskFeatureHead(16, 24, num_groups=8), pyramid[:4])
    assert tuple(mask_features.shape) == (1, 16, 24, 24)
    assert float(np.min(mask_features)) >= 0.0  # ends in ReLU
    head = KernelCategoryHead(
        (6, 5, 4, 3, 2),
        feat_channels=16,
        stacked_convs=2,
        kernel_channels=24,
        num_groups=8,
    )
    categories, kernels = roundtrip(head, pyramid)
    assert [tuple(c.shape) for c in categories] == [
        (1, s, s, 16) for s in (6, 5, 4, 3, 2)
    ]
    assert tuple(kernels.shape) == (1, 36 + 25 + 16 + 9 + 4, 24)


def test_kernel_category_head_levels_follow_num_grids():
    """One level per grid size; the first and last are resized to a neighbour."""
    from keras_solov2.layers.spatial import resize

    rng = np.random.default_rng(3)
    pyramid = [
        rng.normal(size=(1, s, s + s // 2, 16)).astype("float32")
        for s in (16, 8, 4, 2, 1)
    ]
    kwargs = dict(feat_channels=16, stacked_convs=1, kernel_channels=8, num_groups=8)
    five = KernelCategoryHead((6, 5, 4, 3, 2), **kwargs)
    five(pyramid)
    three = KernelCategoryHead((6, 5, 4), **kwargs)
    three(pyramid[:3])
    three.set_weights(five.get_weights())  # the towers are shared by all levels
    categories, kernels = three(pyramid[:3])
    assert [tuple(c.shape) for c in categories] == [(1, s, s, 16) for s in (6, 5, 4)]
    assert tuple(kernels.shape) == (1, 36 + 25 + 16, 8)
    # The five-level head whose third input is already at the second's size:
    # its third level must then equal the three-level head's last one.
    pyramid_b = list(pyramid)
    pyramid_b[2] = np.asarray(resize(pyramid[2], pyramid[1].shape[1:3], "bilinear"))
    categories_b, kernels_b = five(pyramid_b)
    for level in range(3):
        np.testing.assert_allclose(
            np.asarray(categories[level]), np.asarray(categories_b[level]), atol=1e-5
        )
    np.testing.assert_allclose(
        np.asarray(kernels), np.asarray(kernels_b)[:, : 36 + 25 + 16], atol=1e-5
    )
    with pytest.raises(ValueError, match=r"got 4 pyramid levels.*has 5"):
        five(pyramid[:4])
    with pytest.raises(ValueError, match="at least 2"):
        KernelCategoryHead((6,), **kwargs)


def test_backbone_rejects_num_grids_that_do_not_match_the_pyramid():
    with pytest.raises(ValueError, match=r"5 pyramid levels.*has 4"):
        tiny_model(num_grids=(8, 6, 4, 3))  # the FPN gives 5 levels


def numpy_point_nms(scores, grids):
    out, start = scores.copy(), 0
    for s in grids:
        level = scores[:, start : start + s * s].reshape(-1, s, s, scores.shape[-1])
        for i in range(s):
            for j in range(s):
                window = level[:, max(i - 1, 0) : i + 1, max(j - 1, 0) : j + 1]
                keep = window.max(axis=(1, 2)) == level[:, i, j]
                out[:, start + i * s + j] = np.where(keep, level[:, i, j], 0)
        start += s * s
    return out


def test_point_nms_against_a_loop():
    rng = np.random.default_rng(4)
    scores = rng.random((2, 16 + 9, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(point_nms(scores, (4, 3))), numpy_point_nms(scores, (4, 3))
    )


def test_masks_to_boxes():
    masks = np.zeros((1, 3, 10, 12), bool)
    masks[0, 0, 2:5, 3:9] = True
    masks[0, 1, 9, 11] = True
    boxes = np.asarray(masks_to_boxes(masks))
    np.testing.assert_array_equal(
        boxes[0], [[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]
    )


def bilinear(image, out_h, out_w):
    """PyTorch's bilinear resize (align_corners=False), in numpy."""

    def axis(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis(image.shape[0], out_h)
    x0, x1, wx = axis(image.shape[1], out_w)
    rows = image[y0] * (1 - wy)[:, None] + image[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def test_decoder_on_hand_made_outputs():
    # Two levels (S=4, 2), two classes, E=1. Cell 5 (row 1, col 1) says class 1
    # with logit 5; cell 15 (row 3, col 3, not its neighbour) says class 1
    # with logit 4 and the same mask. The mask is +10 on feature pixels
    # 2..5 x 2..5 of an 8x8 map, -10 elsewhere.
    cells = 16 + 4
    logits = np.full((1, cells, 2), -10.0, "float32")
    logits[0, 5, 1] = 5.0
    logits[0, 15, 1] = 4.0
    kernels = np.ones((1, cells, 1), "float32")
    features = np.full((1, 8, 8, 1), -10.0, "float32")
    features[0, 2:6, 2:6] = 10.0
    decoder = SOLOv2Decoder(num_grids=(4, 2), strides=(8, 16), max_detections=5)
    out = decoder(
        logits, kernels, features, resized_size=(32, 32), original_size=(64, 64)
    )
    out = {k: np.asarray(v)[0] for k, v in out.items()}
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    inside = sig(10.0)
    assert out["num_detections"] == 2
    np.testing.assert_array_equal(out["labels"][:2], [1, 1])
    assert np.all(out["labels"][2:] == -1)
    # Maskness = mean probability inside the mask; the duplicate (IoU 1) is
    # decayed by exp(-sigma * 1^2) = exp(-2) by Matrix NMS.
    np.testing.assert_allclose(out["scores"][0], sig(5.0) * inside, rtol=1e-5)
    np.testing.assert_allclose(
        out["scores"][1], sig(4.0) * inside * np.exp(-2.0), rtol=1e-5
    )
    # x4 to the padded input (32), crop, x2 to the original (64), > 0.5;
    # bilinear with half-pixel centres, written out in numpy.
    probs = sig(features[0, :, :, 0])
    expected = bilinear(bilinear(probs, 32, 32), 64, 64) > 0.5
    np.testing.assert_array_equal(out["masks"][0], expected)
    rows, cols = np.flatnonzero(expected.any(1)), np.flatnonzero(expected.any(0))
    np.testing.assert_array_equal(
        out["boxes"][0], [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    )
    assert not out["masks"][2:].any()


def test_opencv_resize_properties():
    # Bit-exactness against OpenCV itself is asserted in the parity tests
    # (mmdetection's resized image); here: identities and closeness to float
    # bilinear interpolation.
    from keras_solov2.layers.opencv_resize import resize_like_opencv

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (1, 37, 53, 3)).astype("uint8")
    same = np.asarray(resize_like_opencv(image, (37, 53)))
    np.testing.assert_array_equal(same, image)
    flat = np.full((1, 20, 30, 3), 173, "uint8")
    for size in ((45, 61), (9, 13)):
        np.testing.assert_array_equal(np.asarray(resize_like_opencv(flat, size)), 173)
        out = np.asarray(resize_like_opencv(image, size))
        reference = np.stack(
            [bilinear(image[0, ..., c].astype(np.float64), *size) for c in range(3)], -1
        )
        assert np.abs(out[0] - reference).max() <= 1.0


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="a TensorFlow function"
)
def test_opencv_resize_and_converter_at_run_time_sizes_match_static_ones():
    # A TensorFlow function traced for any size (Keras' predict after a
    # second image size, a SavedModel) computes the resize coefficients and
    # the keep-ratio size in the graph: the same bits as the static path,
    # which the parity tests check against OpenCV itself.
    import tensorflow as tf

    from keras_solov2.layers.opencv_resize import resize_like_opencv
    from keras_solov2.models.solov2.solov2_image_converter import SOLOv2ImageConverter

    converter = SOLOv2ImageConverter((1333, 800))

    @tf.function(
        input_signature=[
            tf.TensorSpec((1, None, None, 3), tf.uint8),
            tf.TensorSpec((2,), tf.int32),
        ]
    )
    def dynamic_resize(images, size):
        return resize_like_opencv(images, (size[0], size[1]))

    @tf.function(input_signature=[tf.TensorSpec((1, None, None, 3), tf.uint8)])
    def dynamic_preprocess(images):
        padded, resized, _ = converter.preprocess(images)
        return padded, tf.stack(resized)

    rng = np.random.default_rng(7)
    for in_size, out_size in [
        ((37, 53), (45, 61)),
        ((37, 53), (9, 13)),
        ((480, 640), (800, 1067)),
        ((427, 640), (113, 170)),
        ((333, 500), (333, 500)),
        ((1, 7), (5, 3)),
    ]:
        image = rng.integers(0, 256, (1, *in_size, 3)).astype("uint8")
        static = np.asarray(resize_like_opencv(image, out_size))
        got = dynamic_resize(image, np.asarray(out_size, "int32")).numpy()
        np.testing.assert_array_equal(got, static, err_msg=f"{in_size}->{out_size}")
    # (306, 612) and (1224, 612) are sizes where float32 arithmetic gives a
    # side one pixel longer than mmcv's Python floats (667 for 666).
    sizes = [(480, 640), (640, 427), (306, 612), (1224, 612), (1, 3), (799, 1333)]
    for height, width in sizes:
        image = rng.integers(0, 256, (1, height, width, 3)).astype("uint8")
        padded, resized = dynamic_preprocess(image)
        expected = rescale_size(height, width, (1333, 800))
        assert tuple(resized.numpy()) == expected, (height, width)
        static_padded, _, _ = converter.preprocess(image)
        np.testing.assert_array_equal(padded.numpy(), np.asarray(static_padded))
