"""Reference geometry for the data tests, written out again independently.

Nothing here imports keras_solov2: these are the expected values the
readers' batches are checked against (mmcv's keep-ratio size, a half-pixel
bilinear resize, mmdetection's normalise-then-zero-pad).
"""

import numpy as np

# ImageNet statistics on the 0..255 scale, RGB (torchvision's x 255), as
# mmdetection's SOLOv2 configs write them.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def keep_ratio_size(h, w, scale):
    """mmcv.imrescale's output `(h, w)` for a `(long, short)` scale."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def fit_size(h, w, canvas):
    """The keep-ratio `(h, w)` that fits `canvas`, rounded half up."""
    factor = min(canvas[0] / h, canvas[1] / w)
    return int(h * factor + 0.5), int(w * factor + 0.5)


def bilinear(image, out_h, out_w):
    """Half-pixel bilinear resize without antialiasing, rounded to 0..255."""
    image = np.asarray(image, np.float64)
    h, w = image.shape[:2]

    def axis(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis(out_h, h)
    x0, x1, wx = axis(out_w, w)
    top = (
        image[y0][:, x0] * (1 - wx)[None, :, None]
        + image[y0][:, x1] * wx[None, :, None]
    )
    bottom = (
        image[y1][:, x0] * (1 - wx)[None, :, None]
        + image[y1][:, x1] * wx[None, :, None]
    )
    out = top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]
    return np.clip(np.round(out), 0, 255)


def valid_extent(image):
    """`(rows, cols)` of a raw canvas before its `MEAN` padding.

    Raw pixels are integers, so no channel of a real pixel equals the
    (non-integer) mean.
    """
    inside = np.any(image != np.float32(MEAN), axis=-1)
    rows = np.nonzero(inside.any(axis=1))[0]
    cols = np.nonzero(inside.any(axis=0))[0]
    return rows.max() + 1, cols.max() + 1


def assert_mean_padding(image, rh, rw):
    """The canvas outside the top-left `rh x rw` is exactly `MEAN` (float32)."""
    mean = np.float32(MEAN)
    assert image.dtype == np.float32
    assert (image[rh:] == mean).all() and (image[:, rw:] == mean).all()


def mmdet_normalized(image, rh, rw):
    """mmdetection's input: `(x - mean) / std` in float32, then zero padding."""
    out = np.zeros(image.shape, np.float32)
    valid = image[:rh, :rw].astype(np.float32)
    out[:rh, :rw] = (valid - np.float32(MEAN)) / np.float32(STD)
    return out
