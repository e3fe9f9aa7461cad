import keras

from keras_solov2.layers.spatial import spatial_size, upsample_nearest


@keras.saving.register_keras_serializable(package="keras_solov2")
class FeaturePyramid(keras.layers.Layer):
    """Feature pyramid network producing P2-P6 from ResNet's C2-C5.

    Matches mmdetection's `FPN(start_level=0, num_outs=5)`: 1x1 lateral convs
    and 3x3 output convs with biases and no activation, nearest-neighbour
    top-down upsampling to the next finer lateral's size, and P6 as a 1x1
    max-pool with stride 2 on P5 (no parameters).

    Args:
        channels: int. Output channels of every level. Defaults to `256`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: list of 4 NHWC tensors `[C2, C3, C4, C5]`.

    Returns:
        list of 5 tensors `[P2, P3, P4, P5, P6]`.

    Reference: Lin et al., arXiv 1612.03144; SOLOv2, arXiv 2003.10152.
    """

    def __init__(self, channels=256, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        init = keras.initializers.GlorotUniform()
        self.lateral_convs = [
            keras.layers.Conv2D(
                channels,
                1,
                kernel_initializer=init,
                dtype=self.dtype_policy,
                name=f"lateral_convs_{i}",
            )
            for i in range(4)
        ]
        self.fpn_convs = [
            keras.layers.Conv2D(
                channels,
                3,
                padding="same",
                kernel_initializer=init,
                dtype=self.dtype_policy,
                name=f"fpn_convs_{i}",
            )
            for i in range(4)
        ]
        self.p6_pool = keras.layers.MaxPooling2D(
            pool_size=1, strides=2, dtype=self.dtype_policy, name="p6_pool"
        )

    def build(self, input_shape):
        for conv, shape in zip(self.lateral_convs, input_shape, strict=True):
            conv.build(shape)
        for conv, shape in zip(self.fpn_convs, input_shape, strict=True):
            conv.build(tuple(shape[:-1]) + (self.channels,))

    def call(self, inputs, training=None):
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=True)]
        for i in range(3, 0, -1):
            laterals[i - 1] = laterals[i - 1] + upsample_nearest(
                laterals[i], spatial_size(laterals[i - 1]), training=bool(training)
            )
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]
        outs.append(self.p6_pool(outs[-1]))
        return outs

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s[:-1]) + (self.channels,) for s in input_shape]
        b, h, w, c = shapes[-1]
        half = lambda n: None if n is None else (n + 1) // 2  # noqa: E731
        shapes.append((b, half(h), half(w), c))
        return shapes

    def get_config(self):
        config = super().get_config()
        config["channels"] = self.channels
        return config
