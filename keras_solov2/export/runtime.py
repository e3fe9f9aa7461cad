"""Running an exported `.tflite` from Python with `model.predict`'s contract."""

import os
import warnings

import numpy as np

from keras_solov2.export.common import read_metadata
from keras_solov2.export.letterbox import letterbox


class LiteRTPredictor:
    """An exported SOLOv2 `.tflite` behind `SOLOv2.predict`'s interface.

    Each image is letterboxed to the file's input size, run in LiteRT's
    interpreter (XNNPACK on `num_threads` threads), and its masks are pasted
    at the image's original size (`keras_solov2.layers.paste_masks`), with
    the exact boxes of those masks, as `model.predict` returns them. So
    `keras_solov2.evaluation.evaluate(predictor, annotations, images)`
    measures the exported file's COCO AP with the same code as the Keras
    model's.

    Args:
        path: str. A `.tflite` written by `keras_solov2.export.tflite`, with
            its `.tflite.json` beside it.
        num_threads: int. Defaults to `2`.

    Example:
    >>> predictor = keras_solov2.export.LiteRTPredictor("solov2.tflite")
    >>> outputs = predictor.predict(images)   # (B, H, W, 3) uint8
    """

    def __init__(self, path, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.metadata, _ = read_metadata(path, "tflite")
        if "masks" not in self.metadata["outputs"]:
            raise ValueError(
                f"{path} holds the dense body only (exported with "
                "include_postprocessing=False); LiteRTPredictor needs the "
                "end-to-end file."
            )
        self.path = str(path)
        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input_size = tuple(self.metadata["input"]["shape"][1:3])
        self.category_ids = self.metadata.get("category_ids")
        self.class_names = self.metadata.get("class_names")

    @property
    def image_size(self):
        """The deprecated name of `input_size` (removed in the next release)."""
        warnings.warn(
            "LiteRTPredictor.image_size is deprecated and will be removed in "
            "the next release; it is LiteRTPredictor.input_size now.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.input_size

    def run(self, canvas):
        """The raw outputs for one uint8 `(H, W, 3)` canvas of the input size."""
        return self.runner(image=np.asarray(canvas, np.uint8)[None])

    def predict(self, images, verbose=0):
        """`SOLOv2.predict`'s dict for a uint8 `(B, H, W, 3)` batch."""
        from keras_solov2.layers import paste_masks

        del verbose
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        per_image = []
        for image in images:
            canvas, scale, resized = letterbox(image, self.input_size)
            out = self.run(canvas)
            masks, boxes = paste_masks(
                out["masks"],
                resized,
                image.shape[:2],
                mask_threshold=self.metadata["mask_threshold"],
                mask_stride=self.metadata["mask_stride"],
                num_detections=out["num_detections"],
                return_boxes=True,
            )
            per_image.append(
                {
                    "masks": np.asarray(masks),
                    "boxes": np.asarray(boxes),
                    "labels": out["labels"],
                    "scores": out["scores"],
                    "num_detections": out["num_detections"],
                    "candidates_overflow": out["candidates_overflow"],
                }
            )
        return {k: np.concatenate([p[k] for p in per_image]) for k in per_image[0]}

    def __repr__(self):
        return (
            f"LiteRTPredictor({os.path.basename(self.path)!r}, input "
            f"{self.input_size}, quantization {self.metadata.get('quantization')})"
        )
