"""What the SOLOv2Decoder tests share: their dense outputs, their decoder,
and the reference for the masks.

The reference is the decoder's formula before it pasted piece by piece: all
`D` probability maps resized at once as channels (the whole
`(batch, H, W, D)` float tensor), thresholded and transposed, with the boxes
read off the masks in numpy. Pieces must reproduce it bit for bit.
"""

import numpy as np
from keras import ops

from keras_solov2.layers import SOLOv2Decoder
from keras_solov2.layers.spatial import resize
from keras_solov2.models.solov2.mask_paste import paste_masks

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
