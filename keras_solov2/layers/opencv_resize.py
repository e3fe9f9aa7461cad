"""OpenCV's `INTER_LINEAR` resize of uint8 images, bit for bit, in keras.ops.

mmdetection's test pipeline resizes uint8 images with `cv2.resize(...,
INTER_LINEAR)`, which works in fixed point: 11-bit horizontal and vertical
coefficients computed from float32 source positions (clamped at the left
and right borders only), an integer horizontal pass, and a vertical pass
that rounds as `((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16) + 2 >> 2`.
A float bilinear resize differs from it by one grey level on about 12% of
the pixels, which is enough to reorder near-tied detections. This module
reproduces it exactly (checked against OpenCV on upscales and downscales,
see `tests/models/solov2/test_mmdet_parity.py`).
"""

import numpy as np
from keras import ops


def _coefficients(n_in, n_out, clamp):
    """Source indices and 11-bit weights along one axis (numpy, static sizes)."""
    position = ((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5).astype(np.float32)
    index = np.floor(position).astype(np.int64)
    frac = (position - index).astype(np.float32)
    if clamp:  # horizontal axis: OpenCV clamps the position itself
        low = index < 0
        frac[low], index[low] = 0, 0
        high = index >= n_in - 1
        frac[high], index[high] = 0, n_in - 1
    w1 = np.rint(frac * 2048).astype(np.int32)
    w0 = np.rint((np.float32(1) - frac) * 2048).astype(np.int32)
    i0 = np.clip(index, 0, n_in - 1).astype(np.int32)
    i1 = np.clip(index + 1, 0, n_in - 1).astype(np.int32)
    return i0, i1, w0, w1


def _tensor_coefficients(n_in, n_out, clamp):
    """`_coefficients` for sizes known only at run time (scalar tensors).

    The same arithmetic: the source position in float64 rounded to float32
    (as numpy computes it), then float32 fractions and round-half-to-even
    weights, so the result is bit-identical. Needs float64 (TensorFlow; JAX
    traces static shapes and takes the numpy path).
    """
    n_in = ops.cast(n_in, "int32")
    step = ops.cast(n_in, "float64") / ops.cast(n_out, "float64")
    steps = ops.cast(ops.arange(n_out), "float64")
    position = ops.cast((steps + 0.5) * step - 0.5, "float32")
    index = ops.floor(position)
    frac = position - index
    index = ops.cast(index, "int32")
    if clamp:
        low = index < 0
        frac, index = ops.where(low, 0.0, frac), ops.where(low, 0, index)
        high = index >= n_in - 1
        frac, index = ops.where(high, 0.0, frac), ops.where(high, n_in - 1, index)
    w1 = ops.cast(ops.round(frac * 2048.0), "int32")
    w0 = ops.cast(ops.round((1.0 - frac) * 2048.0), "int32")
    i0 = ops.clip(index, 0, n_in - 1)
    i1 = ops.clip(index + 1, 0, n_in - 1)
    return i0, i1, w0, w1


def resize_like_opencv(images, size):
    """Resizes `(batch, H, W, C)` uint8-valued images exactly like OpenCV.

    Args:
        images: tensor with integer values 0..255 (any dtype).
        size: `(height, width)`, Python ints or int scalar tensors.

    Returns:
        float32 tensor `(batch, height, width, C)` with integer values.

    With static sizes the coefficients are numpy constants (what an export
    embeds); with sizes known only at run time (a TensorFlow function traced
    for any image size, a SavedModel) they are computed in the graph, to the
    same bits.
    """
    in_h, in_w = ops.shape(images)[1], ops.shape(images)[2]
    if all(isinstance(v, int) for v in (in_h, in_w, *size)):
        x0, x1, a0, a1 = _coefficients(in_w, size[1], clamp=True)
        y0, y1, b0, b1 = _coefficients(in_h, size[0], clamp=False)
    else:
        x0, x1, a0, a1 = _tensor_coefficients(in_w, size[1], clamp=True)
        y0, y1, b0, b1 = _tensor_coefficients(in_h, size[0], clamp=False)
    pixels = ops.cast(images, "int32")
    a0, a1 = ops.expand_dims(a0, 1), ops.expand_dims(a1, 1)
    rows = ops.take(pixels, x0, axis=2) * a0 + ops.take(pixels, x1, axis=2) * a1
    top = ops.floor_divide(ops.take(rows, y0, axis=1), 16)
    bottom = ops.floor_divide(ops.take(rows, y1, axis=1), 16)
    b0 = ops.expand_dims(ops.expand_dims(b0, 1), 2)
    b1 = ops.expand_dims(ops.expand_dims(b1, 1), 2)
    out = ops.floor_divide(
        ops.floor_divide(top * b0, 65536) + ops.floor_divide(bottom * b1, 65536) + 2, 4
    )
    return ops.cast(ops.clip(out, 0, 255), "float32")
