"""ResNet in the torchvision layout ("pytorch" style), written with Keras layers.

Every convolution has `use_bias=False` and explicit zero padding, so results
match PyTorch's `padding=k // 2` exactly (Keras' `"same"` pads asymmetrically
for stride 2). The stride-2 of a bottleneck sits on its 3x3 convolution.
Layer names follow the PyTorch module names (`layer2_0_conv1` for
`layer2.0.conv1`), which keeps checkpoint conversion a renaming exercise.
"""

import keras

from keras_solov2.layers.frozen_batch_normalization import FrozenBatchNormalization

RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _conv(x, filters, kernel_size, strides, name, trainable, dtype):
    pad = kernel_size // 2
    if pad:
        x = keras.layers.ZeroPadding2D(pad, dtype=dtype, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(
            2.0, mode="fan_out", distribution="untruncated_normal"
        ),
        trainable=trainable,
        dtype=dtype,
        name=name,
    )(x)


def _bn(x, name, norm_eval, trainable, dtype, zero_init=False):
    return FrozenBatchNormalization(
        norm_eval=norm_eval,
        gamma_initializer="zeros" if zero_init else "ones",
        trainable=trainable,
        dtype=dtype,
        name=name,
    )(x)


def _block(x, kind, planes, strides, downsample, name, norm_eval, trainable, zir, dt):
    shortcut = x
    if kind == "basic":
        out_channels = planes
        y = _conv(x, planes, 3, strides, f"{name}_conv1", trainable, dt)
        y = _bn(y, f"{name}_bn1", norm_eval, trainable, dt)
        y = keras.layers.ReLU(dtype=dt, name=f"{name}_relu1")(y)
        y = _conv(y, planes, 3, 1, f"{name}_conv2", trainable, dt)
        y = _bn(y, f"{name}_bn2", norm_eval, trainable, dt, zero_init=zir)
    else:
        out_channels = planes * 4
        y = _conv(x, planes, 1, 1, f"{name}_conv1", trainable, dt)
        y = _bn(y, f"{name}_bn1", norm_eval, trainable, dt)
        y = keras.layers.ReLU(dtype=dt, name=f"{name}_relu1")(y)
        y = _conv(y, planes, 3, strides, f"{name}_conv2", trainable, dt)
        y = _bn(y, f"{name}_bn2", norm_eval, trainable, dt)
        y = keras.layers.ReLU(dtype=dt, name=f"{name}_relu2")(y)
        y = _conv(y, out_channels, 1, 1, f"{name}_conv3", trainable, dt)
        y = _bn(y, f"{name}_bn3", norm_eval, trainable, dt, zero_init=zir)
    if downsample:
        shortcut = _conv(
            x, out_channels, 1, strides, f"{name}_downsample_0", trainable, dt
        )
        shortcut = _bn(shortcut, f"{name}_downsample_1", norm_eval, trainable, dt)
    y = keras.layers.Add(dtype=dt, name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(dtype=dt, name=f"{name}_out")(y)


def resnet_features(
    x,
    depth=50,
    stage_blocks=None,
    base_channels=64,
    frozen_stages=1,
    norm_eval=True,
    zero_init_residual=True,
    prefix="backbone_",
    dtype=None,
):
    """Applies a torchvision-layout ResNet to `x` and returns `[C2, C3, C4, C5]`.

    Args:
        x: symbolic input, normalised RGB images `(batch, H, W, 3)`.
        depth: int. One of 18, 34, 50, 101. Defaults to `50`.
        stage_blocks: optional tuple of 4 ints overriding the blocks per stage
            (tiny test models). Defaults to `None`, the standard depth.
        base_channels: int. Width of the stem and of stage 1. Defaults to `64`.
        frozen_stages: int. `-1` trains everything; `0` freezes the stem;
            `k >= 1` freezes the stem and stages `1..k`. Defaults to `1`.
        norm_eval: bool. Keep BatchNorm statistics frozen (inference mode) even
            while training. Defaults to `True`.
        zero_init_residual: bool. Initialise the last BatchNorm gamma of each
            block to zero. Defaults to `True`.
        prefix: str. Layer name prefix. Defaults to `"backbone_"`.
        dtype: optional dtype policy (e.g. `"mixed_bfloat16"`) for every
            layer. Defaults to `None`, Keras' global policy.
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"`depth` must be one of {sorted(RESNET_SPECS)}, got {depth}.")
    kind, blocks = RESNET_SPECS[depth]
    if stage_blocks is not None:
        blocks = tuple(stage_blocks)
    if len(blocks) != 4:
        raise ValueError(f"`stage_blocks` must have 4 entries, got {blocks}.")
    stem_trainable = frozen_stages < 0
    x = _conv(x, base_channels, 7, 2, f"{prefix}conv1", stem_trainable, dtype)
    x = _bn(x, f"{prefix}bn1", norm_eval, stem_trainable, dtype)
    x = keras.layers.ReLU(dtype=dtype, name=f"{prefix}relu")(x)
    # Zero padding equals PyTorch's -inf padding here: inputs are post-ReLU.
    x = keras.layers.ZeroPadding2D(1, dtype=dtype, name=f"{prefix}maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, dtype=dtype, name=f"{prefix}maxpool")(x)
    expansion = 1 if kind == "basic" else 4
    in_channels = base_channels
    features = []
    for stage, num_blocks in enumerate(blocks):
        planes = base_channels * 2**stage
        trainable = stage + 1 > frozen_stages
        for b in range(num_blocks):
            strides = 2 if (b == 0 and stage > 0) else 1
            downsample = b == 0 and (strides != 1 or in_channels != planes * expansion)
            x = _block(
                x,
                kind,
                planes,
                strides,
                downsample,
                f"{prefix}layer{stage + 1}_{b}",
                norm_eval,
                trainable,
                zero_init_residual,
                dtype,
            )
            in_channels = planes * expansion
        features.append(x)
    return features
