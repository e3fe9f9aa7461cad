import keras

from keras_solov2.layers.conv_norm_act import ConvGNReLU
from keras_solov2.layers.spatial import append_coordinates, resize, spatial_size


@keras.saving.register_keras_serializable(package="keras_solov2")
class MaskFeatureHead(keras.layers.Layer):
    """SOLOv2's unified mask-feature branch, fusing P2-P5 at 1/4 scale.

    Level `i` (P2..P5) goes through `max(i, 1)` conv-GN-ReLU blocks, each of
    the last `i` followed by a x2 bilinear upsample (align_corners=False).
    P5 first gets the two CoordConv channels `[x, y]`. The four maps are
    summed and projected by a 1x1 conv-GN-ReLU to `out_channels` (E), so the
    mask features are non-negative. Matches mmdetection's `MaskFeatModule`
    (`start_level=0, end_level=3`).

    Args:
        feat_channels: int. Hidden width. Defaults to `128`.
        out_channels: int. E, the mask-feature depth and the dynamic kernel
            size. Defaults to `256` (`128` for the light models).
        num_groups: int. GroupNorm groups. Defaults to `32`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: list of 4 NHWC tensors `[P2, P3, P4, P5]`.

    Returns:
        `(batch, H/4, W/4, out_channels)` mask features.

    Reference: SOLOv2 §2.1.2, arXiv 2003.10152.
    """

    def __init__(self, feat_channels=128, out_channels=256, num_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.feat_channels = feat_channels
        self.out_channels = out_channels
        self.num_groups = num_groups
        self.level_convs = []
        for level in range(4):
            convs = [
                ConvGNReLU(
                    feat_channels,
                    3,
                    num_groups,
                    dtype=self.dtype_policy,
                    name=f"convs_all_levels_{level}_conv{j}",
                )
                for j in range(max(level, 1))
            ]
            self.level_convs.append(convs)
        self.conv_pred = ConvGNReLU(
            out_channels, 1, num_groups, dtype=self.dtype_policy, name="conv_pred"
        )

    def build(self, input_shape):
        for level, (convs, shape) in enumerate(
            zip(self.level_convs, input_shape, strict=True)
        ):
            channels = shape[-1] + (2 if level == 3 else 0)
            for conv in convs:
                conv.build(tuple(shape[:-1]) + (channels,))
                channels = self.feat_channels
        self.conv_pred.build(tuple(input_shape[0][:-1]) + (self.feat_channels,))

    def call(self, inputs):
        fused = None
        output_size = spatial_size(inputs[0])
        for level, (convs, x) in enumerate(zip(self.level_convs, inputs, strict=True)):
            if level == 3:
                x = append_coordinates(x)
            for j, conv in enumerate(convs):
                x = conv(x)
                if level > 0:
                    # x2 each time; the last step targets P2's size, which is
                    # the same for inputs padded to a multiple of 32 and keeps
                    # symbolic shape inference exact for any size.
                    height, width = spatial_size(x)
                    size = output_size if j == level - 1 else (height * 2, width * 2)
                    x = resize(x, size, "bilinear")
            fused = x if fused is None else fused + x
        return self.conv_pred(fused)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.out_channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "feat_channels": self.feat_channels,
                "out_channels": self.out_channels,
                "num_groups": self.num_groups,
            }
        )
        return config
