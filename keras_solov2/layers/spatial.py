"""Small spatial helpers shared by the SOLOv2 layers (keras.ops only)."""

import keras
from keras import ops


def spatial_size(x):
    """`(height, width)` of an NHWC tensor: Python ints when static."""
    shape = ops.shape(x)
    return shape[1], shape[2]


def resize(x, size, interpolation="bilinear"):
    """Resizes NHWC `x` to `size` like PyTorch's `F.interpolate`.

    Bilinear is `align_corners=False` (half-pixel centres) without
    anti-aliasing; nearest picks `floor(dst * in / out)` for integer factors.

    Sizes may be dynamic tensors on the TensorFlow backend (a predict function
    retraced for a new image size); `keras.ops.image.resize` only takes
    static sizes, so that one case goes to the op it wraps, `tf.image.resize`.
    """
    static = all(isinstance(s, int) for s in size)
    if static or keras.backend.backend() != "tensorflow":
        return ops.image.resize(x, size, interpolation=interpolation, antialias=False)
    import tensorflow as tf

    return tf.image.resize(x, tf.stack(size), method=interpolation, antialias=False)


def coordinate_channels(x):
    """Normalised coordinates `[x, y]` in `[-1, 1]`, shaped like `x[..., :2]`.

    The x channel comes first, then y, as in the official CoordConv of SOLOv2.
    Equals `torch.linspace(-1, 1, W)` / `torch.linspace(-1, 1, H)` broadcast to
    the feature map.
    """
    height, width = spatial_size(x)
    dtype = x.dtype

    def axis(n):
        n_float = ops.cast(n, "float32")
        step = 2.0 / ops.maximum(n_float - 1.0, 1.0)
        return ops.cast(ops.arange(n, dtype="float32") * step - 1.0, dtype)

    xs = ops.reshape(axis(width), (1, 1, -1, 1))
    ys = ops.reshape(axis(height), (1, -1, 1, 1))
    batch = ops.shape(x)[0]
    xs = ops.broadcast_to(xs, (batch, height, width, 1))
    ys = ops.broadcast_to(ys, (batch, height, width, 1))
    return ops.concatenate([xs, ys], axis=-1)


def append_coordinates(x):
    """CoordConv input: `x` with `[x, y]` coordinate channels appended last."""
    return ops.concatenate([x, coordinate_channels(x)], axis=-1)


def upsample_nearest(x, size, training=False):
    """Nearest-neighbour upsampling of NHWC `x` to `size` (about x2).

    Inference uses `ops.image.resize` (a single RESIZE_NEAREST_NEIGHBOR op in
    TFLite, which LiteRT's GPU accelerator takes). XLA has no gradient kernel
    for that op, so training repeats rows and columns instead and crops to
    `size`. For the exact x2 factors of inputs padded to a multiple of 32
    both give identical values.
    """
    if not training:
        return resize(x, size, "nearest")
    x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
    return x[:, : size[0], : size[1], :]
