"""What the TFLite export tests share: the skip without ai-edge-litert and
the ops and tensor ranks of a file. The tiny model and its float32 files
are the fixtures of conftest.py, made once for the whole folder."""

import pytest

litert = pytest.importorskip(
    "ai_edge_litert.interpreter", reason="ai-edge-litert is not installed"
)


def ops_and_ranks(path):
    interpreter = litert.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    ranks = {len(t["shape"]) for t in interpreter.get_tensor_details()}
    return ops, ranks
