"""The dense body converts to TFLite with builtin ops only and 4-D tensors.

This is the Android design constraint (LiteRT's GPU accelerator takes BHWC
4-D tensors with static shapes): no Flex ops, no rank-5 GroupNorm, no
UpSampling2D. Converting with TFLITE_BUILTINS alone turns any non-builtin op
into a converter error.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_model


@pytest.mark.tflite
def test_body_converts_with_builtins_only_and_rank4(tmp_path):
    litert = pytest.importorskip(
        "ai_edge_litert.interpreter", reason="ai-edge-litert is not installed"
    )
    model = tiny_model()
    images = np.random.default_rng(0).normal(size=(1, 64, 96, 3)).astype("float32")
    expected = model(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((1, 64, 96, 3), tf.float32)],
    )
    saved = str(tmp_path / "saved")
    archive.write_out(saved, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved, signature_keys=["serve"]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()

    interpreter = litert.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    ranks = {len(t["shape"]) for t in interpreter.get_tensor_details()}
    assert max(ranks) <= 4, f"tensor ranks {sorted(ranks)}"
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") for op in ops), ops
    runner = interpreter.get_signature_runner("serve")
    outputs = runner(x=images)
    by_shape = {tuple(v.shape): v for v in outputs.values()}
    for key in ("category_logits", "kernels", "mask_features"):
        want = np.asarray(expected[key])
        got = by_shape[tuple(want.shape)]
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))
