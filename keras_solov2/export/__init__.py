"""Deployment: SavedModel for serving, TFLite / LiteRT for phones and desktops.

`saved_model(model, path)` and `tflite(model, path, image_size=...)`;
`model.export(path, format="tf_saved_model" | "litert")` calls them.
"""

from keras_solov2.export.graphs import BODY_OUTPUT_NAMES, OUTPUT_NAMES
from keras_solov2.export.letterbox import PAD_VALUE, letterbox
from keras_solov2.export.runtime import LiteRTPredictor
from keras_solov2.export.saved_model import saved_model
from keras_solov2.export.tflite import QUANTIZATIONS, tflite

__all__ = [
    "BODY_OUTPUT_NAMES",
    "LiteRTPredictor",
    "OUTPUT_NAMES",
    "PAD_VALUE",
    "QUANTIZATIONS",
    "letterbox",
    "saved_model",
    "tflite",
]
