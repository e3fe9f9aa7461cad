from keras_solov2.models.solov2 import SOLOv2
from keras_solov2.models.solov2_backbone import SOLOv2Backbone
from keras_solov2.models.solov2_image_converter import SOLOv2ImageConverter

__all__ = ["SOLOv2", "SOLOv2Backbone", "SOLOv2ImageConverter"]
