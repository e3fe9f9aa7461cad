from keras_solov2.models.solov2 import SOLOv2
from keras_solov2.models.solov2_backbone import SOLOv2Backbone

__all__ = ["SOLOv2", "SOLOv2Backbone"]
