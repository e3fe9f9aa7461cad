"""Deployment: SavedModel for serving, TFLite / LiteRT for phones and desktops,
ONNX for ONNX Runtime and TensorRT.

`saved_model(model, path)`, `tflite(model, path, input_size=...)` and
`onnx(model, path, input_size=...)`;
`model.export(path, format="tf_saved_model" | "litert" | "onnx")` calls them.
"""

from keras_solov2.export.graphs import BODY_OUTPUT_NAMES, OUTPUT_NAMES
from keras_solov2.export.letterbox import PAD_VALUE, letterbox
from keras_solov2.export.onnx import OPSETS, onnx
from keras_solov2.export.runtime import LiteRTPredictor
from keras_solov2.export.saved_model import saved_model
from keras_solov2.export.tflite import QUANTIZATIONS, tflite

__all__ = [
    "BODY_OUTPUT_NAMES",
    "LiteRTPredictor",
    "OPSETS",
    "OUTPUT_NAMES",
    "PAD_VALUE",
    "QUANTIZATIONS",
    "letterbox",
    "onnx",
    "saved_model",
    "tflite",
]
