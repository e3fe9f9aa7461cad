"""Fixtures of the TFLite export tests: the tiny model and its float32
end-to-end and body files, made once for all the files here (test_onnx.py
has its own)."""

import pytest
from helpers import IMAGE_SIZE, detecting_model

from keras_solov2 import export


@pytest.fixture(scope="session")
def model():
    return detecting_model()


@pytest.fixture(scope="session")
def exported(model, tmp_path_factory):
    """The float32 end-to-end and body files of the tiny model."""
    folder = tmp_path_factory.mktemp("tflite")
    return {
        "end_to_end": export.tflite(
            model, str(folder / "e2e.tflite"), input_size=IMAGE_SIZE, verbose=False
        ),
        "body": export.tflite(
            model,
            str(folder / "body.tflite"),
            input_size=IMAGE_SIZE,
            include_postprocessing=False,
            verbose=False,
        ),
    }
