from keras_solov2.layers.conv_norm_act import ConvGNReLU
from keras_solov2.layers.feature_pyramid import FeaturePyramid
from keras_solov2.layers.frozen_batch_normalization import FrozenBatchNormalization
from keras_solov2.layers.group_normalization import GroupNormalization4D
from keras_solov2.layers.pixel_normalization import PixelNormalization
from keras_solov2.models.solov2.kernel_category_head import KernelCategoryHead
from keras_solov2.models.solov2.mask_feature_head import MaskFeatureHead
from keras_solov2.models.solov2.mask_paste import masks_to_boxes, paste_masks
from keras_solov2.models.solov2.matrix_nms import MatrixNMS
from keras_solov2.models.solov2.point_nms import point_nms
from keras_solov2.models.solov2.solov2_decoder import SOLOv2Decoder
from keras_solov2.models.solov2.solov2_target_encoder import SOLOv2TargetEncoder

__all__ = [
    "ConvGNReLU",
    "FeaturePyramid",
    "FrozenBatchNormalization",
    "GroupNormalization4D",
    "KernelCategoryHead",
    "MaskFeatureHead",
    "MatrixNMS",
    "PixelNormalization",
    "SOLOv2Decoder",
    "SOLOv2TargetEncoder",
    "masks_to_boxes",
    "paste_masks",
    "point_nms",
]
