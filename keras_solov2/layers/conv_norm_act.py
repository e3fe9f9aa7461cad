import keras

from keras_solov2.layers.group_normalization import GroupNormalization4D


@keras.saving.register_keras_serializable(package="keras_solov2")
class ConvGNReLU(keras.layers.Layer):
    """`Conv2D` (no bias) -> `GroupNormalization4D` -> ReLU, mmcv's `ConvModule`.

    Args:
        filters: int. Output channels.
        kernel_size: int. Square kernel size; padding is `kernel_size // 2`
            ("same" at stride 1, identical to PyTorch). Defaults to `3`.
        groups: int. GroupNorm groups. Defaults to `32`.
        kernel_std: float. Std of the normal kernel initialiser (mmdet's
            `Normal(std=0.01)`). Defaults to `0.01`.
        **kwargs: Base layer keyword arguments.
    """

    def __init__(self, filters, kernel_size=3, groups=32, kernel_std=0.01, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.groups = groups
        self.kernel_std = kernel_std
        self.conv = keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=kernel_std),
            dtype=self.dtype_policy,
            name="conv",
        )
        self.gn = GroupNormalization4D(groups, dtype=self.dtype_policy, name="gn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.gn.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, inputs):
        return keras.ops.relu(self.gn(self.conv(inputs)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "groups": self.groups,
                "kernel_std": self.kernel_std,
            }
        )
        return config
