"""Image geometry and normalisation: the one home of SOLOv2's preprocessing.

The data pipeline (`tf.data`, in-graph), the model's image converter
(`keras.ops`, any backend) and pure-Python checks all use these functions, so
that the keep-ratio resize, the padding and the normalisation are written
once. Each array function takes `xp`, the array namespace to compute with:
`numpy`, `keras.ops`, or for `tf.data` the TensorFlow namespace
`keras_solov2.data.transforms.TensorFlowOps` (each provides the few
numpy-style functions used here: minimum, maximum, floor, pad, arange, where,
logical_and, expand_dims, shape). With Python numbers and `xp=None` they
compute in Python floats, like mmcv.

The conventions are mmdetection's (`DetDataPreprocessor` with
`bgr_to_rgb=True`): images are RGB on the 0..255 scale; the network sees
`(image - PIXEL_MEAN) / PIXEL_STD` (the ImageNet statistics), padded with
zeros *after* normalisation at the bottom and right up to a multiple of
`size_divisor`.

Every entry point of `keras_solov2.SOLOv2` takes raw 0..255 images and
normalises inside the graph. Padding a raw image with `PIXEL_MEAN`
(`pad_with_mean`) therefore gives exactly mmdetection's zero padding after
normalisation: `(PIXEL_MEAN - PIXEL_MEAN) / PIXEL_STD` is exactly `0` in
float32.
"""

import math

import numpy as np

# ImageNet statistics on the 0..255 scale, RGB order (torchvision x 255).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# Padding multiple of the network input: the coarsest FPN stride (P5, 32).
SIZE_DIVISOR = 32
# Stride of the mask features (`SOLOv2Backbone.mask_stride`): they are fused
# at P2, a quarter of the padded input. The readers' compact mask targets
# and the target encoder use it.
MASK_STRIDE = 4


class _PythonMath:
    """The `xp` of plain Python numbers."""

    minimum = staticmethod(min)
    maximum = staticmethod(max)
    floor = staticmethod(math.floor)


def _namespace(xp):
    return _PythonMath if xp is None else xp


def rescale_factor(height, width, long_edge, short_edge, xp=None):
    """The factor of mmcv's keep-ratio `imrescale(img, (long, short))`.

    `min(long_edge / max(h, w), short_edge / min(h, w))`: the largest factor
    that keeps the long side within `long_edge` and the short side within
    `short_edge`. The arguments broadcast (e.g. `(N, 1)` image sizes against
    `(S,)` scales).
    """
    xp = _namespace(xp)
    return xp.minimum(
        long_edge / xp.maximum(height, width), short_edge / xp.minimum(height, width)
    )


def fit_factor(height, width, canvas_height, canvas_width, xp=None):
    """The largest keep-ratio factor that fits `(h, w)` in the canvas."""
    xp = _namespace(xp)
    return xp.minimum(canvas_height / height, canvas_width / width)


def scaled_length(length, factor, xp=None):
    """`floor(length * factor + 0.5)`, mmcv's `int(x * factor + 0.5)`.

    Floats of `xp`'s type (Python ints with `xp=None`); callers cast.
    """
    if xp is None:
        return int(math.floor(length * factor + 0.5))
    return xp.floor(length * factor + 0.5)


def rescale_size(height, width, scale):
    """Keep-ratio output size of `mmcv.imrescale(img, scale)`, in Python ints.

    Args:
        height: int. Input image height.
        width: int. Input image width.
        scale: tuple of two ints, `(long_edge_max, short_edge_max)` in either
            order, e.g. `(1333, 800)`.

    Returns:
        `(new_height, new_width)`, each side rounded as mmcv does.
    """
    factor = rescale_factor(height, width, max(scale), min(scale))
    return scaled_length(height, factor), scaled_length(width, factor)


def padded_length(length, size_divisor=SIZE_DIVISOR):
    """`length` rounded up to a multiple of `size_divisor` (ints or tensors)."""
    return (length + size_divisor - 1) // size_divisor * size_divisor


def canvas_for_scales(scales, size_divisor=SIZE_DIVISOR):
    """The smallest square canvas that every keep-ratio `scales` resize fits.

    A `(long, short)` resize keeps the long side within `long`, whatever the
    orientation, so a square of the largest `long` (rounded up to
    `size_divisor`) fits landscape and portrait images alike.
    """
    side = padded_length(max(max(s) for s in scales), size_divisor)
    return side, side


def landscape_canvas_for_scales(scales, size_divisor=SIZE_DIVISOR):
    """The smallest landscape canvas `(H, W)` that every `scales` resize fits.

    For aspect-ratio grouping: a keep-ratio `(long, short)` resize of an
    image no taller than wide is at most `short` high and `long` wide, so
    `(max short, max long)` (rounded up to `size_divisor`) fits every
    landscape image, and its transpose every portrait one.
    """
    short = padded_length(max(min(s) for s in scales), size_divisor)
    long = padded_length(max(max(s) for s in scales), size_divisor)
    return short, long


def normalize(images):
    """`(images - PIXEL_MEAN) / PIXEL_STD` in float32, channels last.

    Plain arithmetic on float32 `images` of any array type (numpy, a
    `keras.ops` or TensorFlow tensor).
    """
    mean = np.asarray(PIXEL_MEAN, np.float32)
    std = np.asarray(PIXEL_STD, np.float32)
    return (images - mean) / std


def pad_with_mean(images, size, xp, image_size=None):
    """Pads `(..., h, w, 3)` raw images at the bottom/right to `size`.

    The padding is `PIXEL_MEAN`, so that after `normalize` it is exactly
    zero, mmdetection's padding.

    Args:
        images: float32 `(..., h, w, 3)` tensor or array.
        size: `(H, W)` with `H >= h` and `W >= w`; ints or scalar tensors.
        xp: the array namespace (see the module docstring).
        image_size: `(h, w)` if known. Defaults to the images' shape.
    """
    if image_size is None:
        height, width = images.shape[-3], images.shape[-2]
        if height is None or width is None:
            shape = xp.shape(images)
            height, width = shape[-3], shape[-2]
    else:
        height, width = image_size
    widths = [(0, 0)] * (len(images.shape) - 3)
    widths += [(0, size[0] - height), (0, size[1] - width), (0, 0)]
    padded = xp.pad(images, widths, "constant")
    rows = xp.arange(size[0]) < height
    cols = xp.arange(size[1]) < width
    inside = xp.logical_and(xp.expand_dims(rows, 1), xp.expand_dims(cols, 0))
    mean = np.asarray(PIXEL_MEAN, np.float32)
    return xp.where(xp.expand_dims(inside, -1), padded, mean)
