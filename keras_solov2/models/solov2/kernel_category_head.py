import math

import keras
from keras import ops

from keras_solov2.layers.conv_norm_act import ConvGNReLU
from keras_solov2.layers.spatial import append_coordinates, resize, spatial_size


@keras.saving.register_keras_serializable(package="keras_solov2")
class KernelCategoryHead(keras.layers.Layer):
    """SOLOv2's kernel branch and category-tower trunk, shared over the levels.

    There is one pyramid level per entry of `num_grids` (5 in SOLOv2:
    P2..P6). Per level: the first level is first resized to the second's size
    and the last to the one before it (bilinear; P2 to P3's size and P6 to
    P5's, as in mmdetection's `resize_feats`).
    The coordinate channels `[x, y]` are appended, the result is resized to
    `S x S` (bilinear, align_corners=False), the kernel tower sees all
    channels and the category tower the same tensor without the two
    coordinate channels. Each tower is `stacked_convs` x conv-GN-ReLU. The
    kernel tower ends in `conv_kernel` (3x3, bias, no activation) giving one
    E-dimensional dynamic 1x1 kernel per grid cell. The class-specific
    `conv_cls` is not here: it belongs to the task (`keras_solov2.SOLOv2`), so
    that the class-agnostic part can be reused with another label set.

    Args:
        num_grids: tuple of ints. Grid size S per level, at least 2 levels;
            their number is the number of inputs. Defaults to
            `(40, 36, 24, 16, 12)`.
        feat_channels: int. Tower width. Defaults to `512`.
        stacked_convs: int. Convs per tower. Defaults to `4`.
        kernel_channels: int. E, the dynamic kernel size. Defaults to `256`.
        num_groups: int. GroupNorm groups. Defaults to `32`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: list of `len(num_grids)` NHWC tensors, finest first
            (`[P2, P3, P4, P5, P6]`).

    Returns:
        `(category_features, kernels)`: a list of `len(num_grids)` tensors
        `(batch, S, S, feat_channels)` and a tensor `(batch, sum(S^2), E)`
        with the cells of all levels in row-major order, level by level.

    Example:
    >>> head = keras_solov2.layers.KernelCategoryHead(
    ...     num_grids=(12, 8, 4), feat_channels=64, stacked_convs=2,
    ...     kernel_channels=32, num_groups=8)
    >>> pyramid = [keras.random.normal((1, s, s, 32)) for s in (32, 16, 8)]
    >>> category_features, kernels = head(pyramid)  # kernels: (1, 224, 32)

    Reference: SOLOv2 §2.1.1, arXiv 2003.10152.
    """

    def __init__(
        self,
        num_grids=(40, 36, 24, 16, 12),
        feat_channels=512,
        stacked_convs=4,
        kernel_channels=256,
        num_groups=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_grids = tuple(int(s) for s in num_grids)
        if len(self.num_grids) < 2 or min(self.num_grids) < 1:
            raise ValueError(
                "`num_grids` needs a positive grid size for each of at least 2 "
                f"pyramid levels; got {tuple(num_grids)}."
            )
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.kernel_channels = kernel_channels
        self.num_groups = num_groups

        def tower(name):
            return [
                ConvGNReLU(
                    feat_channels,
                    3,
                    num_groups,
                    dtype=self.dtype_policy,
                    name=f"{name}_{i}",
                )
                for i in range(stacked_convs)
            ]

        self.kernel_convs = tower("kernel_convs")
        self.cls_convs = tower("cls_convs")
        self.conv_kernel = keras.layers.Conv2D(
            kernel_channels,
            3,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=self.dtype_policy,
            name="conv_kernel",
        )

    def _check_levels(self, num_inputs):
        if num_inputs != len(self.num_grids):
            raise ValueError(
                f"{self.name}: got {num_inputs} pyramid levels but num_grids="
                f"{self.num_grids} has {len(self.num_grids)}: one grid size per "
                "level."
            )

    def build(self, input_shape):
        self._check_levels(len(input_shape))
        channels = input_shape[0][-1]
        b = input_shape[0][0]
        for convs, in_channels in (
            (self.kernel_convs, channels + 2),
            (self.cls_convs, channels),
        ):
            for conv in convs:
                conv.build((b, None, None, in_channels))
                in_channels = self.feat_channels
        self.conv_kernel.build((b, None, None, self.feat_channels))

    def call(self, inputs):
        self._check_levels(len(inputs))
        levels = list(inputs)
        levels[0] = resize(inputs[0], spatial_size(inputs[1]), "bilinear")
        levels[-1] = resize(inputs[-1], spatial_size(inputs[-2]), "bilinear")
        category_features, kernels = [], []
        for x, grid in zip(levels, self.num_grids, strict=True):
            x = resize(append_coordinates(x), (grid, grid), "bilinear")
            kernel_x = x
            for conv in self.kernel_convs:
                kernel_x = conv(kernel_x)
            kernel_x = self.conv_kernel(kernel_x)
            kernels.append(
                ops.reshape(kernel_x, (-1, grid * grid, self.kernel_channels))
            )
            cls_x = x[..., :-2]
            for conv in self.cls_convs:
                cls_x = conv(cls_x)
            category_features.append(cls_x)
        return category_features, ops.concatenate(kernels, axis=1)

    def compute_output_shape(self, input_shape):
        self._check_levels(len(input_shape))
        b = input_shape[0][0]
        cells = sum(s * s for s in self.num_grids)
        cats = [(b, s, s, self.feat_channels) for s in self.num_grids]
        return cats, (b, cells, self.kernel_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_grids": self.num_grids,
                "feat_channels": self.feat_channels,
                "stacked_convs": self.stacked_convs,
                "kernel_channels": self.kernel_channels,
                "num_groups": self.num_groups,
            }
        )
        return config


def category_logits(
    category_features, num_grids, num_classes, prior_probability, dtype
):
    """The task's classifier on the category tower's outputs: one 3x3 conv
    (`conv_cls`) shared by the levels, its bias set so that every class
    starts at `prior_probability`, and the levels' grids flattened and
    concatenated into `(batch, sum(S^2), num_classes)` logits."""
    conv_cls = keras.layers.Conv2D(
        num_classes,
        3,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer=keras.initializers.Constant(
            -math.log((1 - prior_probability) / prior_probability)
        ),
        dtype=dtype,
        name="conv_cls",
    )
    logits = [
        keras.layers.Reshape(
            (s * s, num_classes), dtype=dtype, name=f"category_logits_{i}"
        )(conv_cls(x))
        for i, (s, x) in enumerate(zip(num_grids, category_features, strict=True))
    ]
    return keras.layers.Concatenate(axis=1, dtype=dtype, name="category_logits")(logits)
