import keras

from keras_solov2.layers.feature_pyramid import FeaturePyramid
from keras_solov2.models.resnet import resnet_features
from keras_solov2.models.solov2.kernel_category_head import KernelCategoryHead
from keras_solov2.models.solov2.mask_feature_head import MaskFeatureHead
from keras_solov2.utils import image_geometry


@keras.saving.register_keras_serializable(package="keras_solov2")
class SOLOv2Backbone(keras.Model):
    """Everything class-agnostic in SOLOv2: ResNet, FPN and the heads' trunks.

    A functional model from normalised, padded RGB images to a dict of dense
    outputs:
    - `"category_features"`: list of 5 `(batch, S, S, head_channels)` maps,
      the category tower outputs (the task adds the classifier conv);
    - `"kernels"`: `(batch, sum(S^2), E)` dynamic 1x1 kernels, one per cell;
    - `"mask_features"`: `(batch, H/4, W/4, E)` unified mask features.

    The body is written for LiteRT's GPU accelerator: 4-D tensors only
    (GroupNorm on a `(B, HW, G, C/G)` view), `ops.image.resize` for every
    resize, explicit zero padding instead of asymmetric "same".

    Input height and width must be multiples of 32 (the preprocessor pads).
    `mask_stride` (4) is the stride of `"mask_features"`: the task's target
    encoder and decoder work at `1 / mask_stride` of the input.

    Args:
        depth: int. ResNet depth, 18, 34, 50 or 101. Defaults to `50`.
        stage_blocks: optional tuple of 4 ints, blocks per ResNet stage (tiny
            test models). Defaults to `None`.
        base_channels: int. ResNet stem / stage-1 width. Defaults to `64`.
        frozen_stages: int. ResNet stages frozen (`-1`: none, `0`: stem).
            Defaults to `1`, the official recipe.
        norm_eval: bool. Keep BatchNorm statistics frozen. Defaults to `True`.
        zero_init_residual: bool. Defaults to `True`.
        fpn_channels: int. Defaults to `256`.
        num_grids: tuple of 5 ints. Defaults to `(40, 36, 24, 16, 12)`.
        head_channels: int. Kernel/category tower width. Defaults to `512`.
        stacked_convs: int. Convs per tower. Defaults to `4`.
        kernel_channels: int. E. Defaults to `256`.
        mask_feature_channels: int. Hidden width of the mask-feature branch.
            Defaults to `128`.
        num_groups: int. GroupNorm groups. Defaults to `32`.
        image_shape: tuple. Input shape. Defaults to `(None, None, 3)`.
        dtype: optional dtype policy for every layer, e.g. `"mixed_bfloat16"`
            or `"mixed_float16"` (float32 variables, lower-precision
            compute; GroupNorm and BatchNorm statistics stay in float32).
            Defaults to `None`, Keras' global policy
            (`keras.config.dtype_policy()`).
        **kwargs: `keras.Model` keyword arguments (`name`).

    Example:
    >>> backbone = keras_solov2.models.SOLOv2Backbone(depth=18,
    ...     head_channels=256, stacked_convs=2, kernel_channels=128)

    Reference: Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation",
    arXiv 2003.10152.
    """

    def __init__(
        self,
        depth=50,
        stage_blocks=None,
        base_channels=64,
        frozen_stages=1,
        norm_eval=True,
        zero_init_residual=True,
        fpn_channels=256,
        num_grids=(40, 36, 24, 16, 12),
        head_channels=512,
        stacked_convs=4,
        kernel_channels=256,
        mask_feature_channels=128,
        num_groups=32,
        image_shape=(None, None, 3),
        dtype=None,
        **kwargs,
    ):
        # Every sublayer gets the policy: the functional model's own `dtype`
        # would not reach layers built before `super().__init__`.
        dtype = keras.dtype_policies.get(dtype)
        images = keras.Input(shape=image_shape, name="images")
        features = resnet_features(
            images,
            depth=depth,
            stage_blocks=stage_blocks,
            base_channels=base_channels,
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            zero_init_residual=zero_init_residual,
            dtype=dtype,
        )
        pyramid = FeaturePyramid(fpn_channels, dtype=dtype, name="neck")(features)
        mask_features = MaskFeatureHead(
            mask_feature_channels,
            kernel_channels,
            num_groups,
            dtype=dtype,
            name="mask_feature_head",
        )(pyramid[:4])
        category_features, kernels = KernelCategoryHead(
            num_grids=num_grids,
            feat_channels=head_channels,
            stacked_convs=stacked_convs,
            kernel_channels=kernel_channels,
            num_groups=num_groups,
            dtype=dtype,
            name="mask_head",
        )(pyramid)
        outputs = {
            "category_features": list(category_features),
            "kernels": kernels,
            "mask_features": mask_features,
        }
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.dtype_policy = dtype  # a functional model drops `dtype`
        self.depth = depth
        self.stage_blocks = None if stage_blocks is None else tuple(stage_blocks)
        self.base_channels = base_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self.fpn_channels = fpn_channels
        self.num_grids = tuple(int(s) for s in num_grids)
        self.head_channels = head_channels
        self.stacked_convs = stacked_convs
        self.kernel_channels = kernel_channels
        self.mask_feature_channels = mask_feature_channels
        self.num_groups = num_groups
        self.image_shape = tuple(image_shape)

    @property
    def mask_stride(self):
        """Stride of `"mask_features"`: fused at P2, 1/4 of the input."""
        return image_geometry.MASK_STRIDE

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "depth": self.depth,
            "stage_blocks": self.stage_blocks,
            "base_channels": self.base_channels,
            "frozen_stages": self.frozen_stages,
            "norm_eval": self.norm_eval,
            "zero_init_residual": self.zero_init_residual,
            "fpn_channels": self.fpn_channels,
            "num_grids": self.num_grids,
            "head_channels": self.head_channels,
            "stacked_convs": self.stacked_convs,
            "kernel_channels": self.kernel_channels,
            "mask_feature_channels": self.mask_feature_channels,
            "num_groups": self.num_groups,
            "image_shape": self.image_shape,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
