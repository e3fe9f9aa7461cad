import keras
from keras import ops

_SCALE = 1.0 / 16.0


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
