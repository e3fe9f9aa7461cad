"""What the TFLite export tests share: the skip without ai-edge-litert, the
ops and tensor ranks of a file, and the module-scoped fixtures of the tiny
model and its float32 files. A test file takes the fixtures by name
(`model = tflite_files.model`): one model and one set of files per file."""

import pytest
from helpers import IMAGE_SIZE, detecting_model

from keras_solov2 import export

litert = pytest.importorskip(
    "ai_edge_litert.interpreter", reason="ai-edge-litert is not installed"
)


def ops_and_ranks(path):
    interpreter = litert.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    ranks = {len(t["shape"]) for t in interpreter.get_tensor_details()}
    return ops, ranks


@pytest.fixture(scope="module")
def model():
    return detecting_model()


@pytest.fixture(scope="module")
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
