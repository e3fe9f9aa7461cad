"""SOLOv2 in one folder, as keras-hub lays out a model: backbone, task,
image converter, target encoder, loss, decoder, heads and presets.

Reference: Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation",
arXiv 2003.10152.
"""

from keras_solov2.models.solov2.solov2 import SOLOv2
from keras_solov2.models.solov2.solov2_backbone import SOLOv2Backbone
from keras_solov2.models.solov2.solov2_decoder import SOLOv2Decoder
from keras_solov2.models.solov2.solov2_image_converter import SOLOv2ImageConverter
from keras_solov2.models.solov2.solov2_target_encoder import SOLOv2TargetEncoder

__all__ = [
    "SOLOv2",
    "SOLOv2Backbone",
    "SOLOv2Decoder",
    "SOLOv2ImageConverter",
    "SOLOv2TargetEncoder",
]
