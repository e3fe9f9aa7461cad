from keras_solov2.models.solov2 import SOLOv2, SOLOv2Backbone, SOLOv2ImageConverter

__all__ = ["SOLOv2", "SOLOv2Backbone", "SOLOv2ImageConverter"]
