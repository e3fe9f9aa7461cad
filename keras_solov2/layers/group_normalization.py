import contextlib
import threading

import keras
from keras import ops

_SCALE = 1.0 / 16.0
# Spatial means are taken by 2x2 average pools down to this many values.
_POOLED_COUNT = 256
_STATE = threading.local()


@contextlib.contextmanager
def float16_safe_statistics():
    """Within it, `GroupNormalization4D` layers traced with static sizes take
    their statistics in a form that stays accurate on a GPU computing in
    float16, as LiteRT's accelerator does on a phone (see `_safe_moments`).

    The exporters trace the network inside it. In float32 the result equals
    the plain formula to rounding (a few ulps).
    """
    previous = getattr(_STATE, "safe", False)
    _STATE.safe = True
    try:
        yield
    finally:
        _STATE.safe = previous


@keras.saving.register_keras_serializable(package="keras_solov2")
class GroupNormalization4D(keras.layers.Layer):
    """Group normalisation written with 4-D tensors only.

    Numerically the same as `torch.nn.GroupNorm` (biased variance, `epsilon`
    inside the square root) and `keras.layers.GroupNormalization`, but the
    statistics are computed on a `(batch, height * width, groups,
    channels_per_group)` view, so no rank-5 tensor ever appears. Keras'
    `GroupNormalization` lowers to 5-D reshapes that LiteRT's GPU accelerator
    refuses; this layer keeps the SOLOv2 body GPU-delegate friendly.

    Args:
        groups: int. Number of groups. Must divide the channel count.
            Defaults to `32` (SOLOv2 uses GN(32) everywhere).
        epsilon: float. Added to the variance. Defaults to `1e-5`, PyTorch's
            default.
        **kwargs: Base layer keyword arguments.

    Example:
    >>> layer = keras_solov2.layers.GroupNormalization4D(groups=32)
    >>> y = layer(np.random.rand(1, 8, 8, 64).astype("float32"))

    Reference: Wu & He, "Group Normalization", arXiv 1803.08494; used by
    SOLOv2 (arXiv 2003.10152).
    """

    def __init__(self, groups=32, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"GroupNormalization4D '{self.name}': channels ({channels}) must "
                f"be known and divisible by groups ({self.groups})."
            )
        self.gamma = self.add_weight(
            name="gamma", shape=(channels,), initializer="ones"
        )
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        shape = ops.shape(inputs)
        channels = inputs.shape[-1]
        x = ops.cast(inputs, "float32")
        if getattr(_STATE, "safe", False) and all(
            isinstance(d, int) for d in inputs.shape[1:]
        ):
            x = _safe_normalize(x, self.groups, self.epsilon)
            x = x * ops.cast(self.gamma, x.dtype) + ops.cast(self.beta, x.dtype)
            return ops.cast(x, self.compute_dtype)
        x = ops.reshape(
            x, (-1, shape[1] * shape[2], self.groups, channels // self.groups)
        )
        # The sums behind both means run over H * W * C / G values. A GPU
        # computing in float16 (LiteRT's default) overflows them past 65504
        # for a trained model's activations, so they are taken of values
        # scaled by 1/16 (1/256 for the squares) and scaled back: exact in
        # float32, where a power of two only moves the exponent.
        mean = ops.mean(x * _SCALE, axis=(1, 3), keepdims=True) / _SCALE
        centered = x - mean
        variance = ops.mean(
            ops.square(centered * _SCALE), axis=(1, 3), keepdims=True
        ) / (_SCALE * _SCALE)
        x = centered * ops.rsqrt(variance + self.epsilon)
        x = ops.reshape(x, shape)
        x = x * ops.cast(self.gamma, x.dtype) + ops.cast(self.beta, x.dtype)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "epsilon": self.epsilon})
        return config


def _safe_normalize(x, groups, epsilon):
    """`(x - mean) / sqrt(var + epsilon)` per group of a static-size
    `(batch, H, W, C)` tensor, without a float16 sum that can overflow or
    lose the small terms.

    LiteRT's GPU accelerator sums in float16 (up to 65504, about 3 digits),
    and a conv output of a trained model reaches thousands: its sum over
    112 x 152 pixels overflows, its squares overflow alone. So each group is
    first divided by its largest magnitude (group normalisation does not
    change with the scale of its input, once `epsilon` is scaled with it),
    and the spatial means are 2x2 average pools, each of four values of at
    most 1, down to a few hundred values and one short mean.
    """
    channels = x.shape[-1]
    size = channels // groups

    def per_group(v, reduce):  # (b, 1, 1, C) -> the group's value per channel
        v = reduce(ops.reshape(v, (-1, 1, groups, size)), axis=-1, keepdims=True)
        return ops.reshape(v * ops.ones((1, 1, 1, size), v.dtype), (-1, 1, 1, channels))

    peak = per_group(ops.max(ops.abs(x), axis=(1, 2), keepdims=True), ops.max)
    peak = ops.maximum(peak, 1e-4)
    y = x / peak
    mean = per_group(_spatial_mean(y), ops.mean)
    centered = y - mean
    variance = per_group(_spatial_mean(ops.square(centered)), ops.mean)
    # epsilon / peak**2 underflows float16 for large peaks: the floor keeps
    # an all-constant group at 0 instead of 0 * inf.
    scaled_epsilon = ops.square(float(epsilon) ** 0.5 / peak)
    return centered * ops.rsqrt(ops.maximum(variance + scaled_epsilon, 1e-7))


def _spatial_mean(x):
    """Mean over axes 1 and 2 (static), as 2x2 average pools then a mean."""
    height, width = x.shape[1], x.shape[2]
    while height * width > _POOLED_COUNT and (height % 2 == 0 or width % 2 == 0):
        pool = (2 if height % 2 == 0 else 1, 2 if width % 2 == 0 else 1)
        x = ops.average_pool(x, pool, strides=pool, padding="valid")
        height, width = height // pool[0], width // pool[1]
    return ops.mean(x, axis=(1, 2), keepdims=True)
