"""MatrixNMS compiled: under XLA with a dynamic batch, in a functional
model, converted to TFLite with builtin ops only, and inside `jax.jit`,
against mmdetection's cases (matrix_nms_cases.py)."""

import pathlib
import warnings

import keras
import numpy as np
import pytest
from helpers import REPO, TESTS, run_on_jax
from matrix_nms_cases import (
    CASES,
    assert_matches,
    inputs_for,
    layer_for,
    to_numpy,
)

from keras_solov2.models.solov2.matrix_nms import MatrixNMS


def test_jit_compile_with_dynamic_batch():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function needs the TensorFlow backend")
    case = "gauss_solov2cfg"
    masks, labels, scores, area = inputs_for(case)
    layer = layer_for(case)
    n = masks.shape[1]

    @tf.function(
        jit_compile=True,
        input_signature=[
            tf.TensorSpec((None, n) + masks.shape[2:], tf.bool),
            tf.TensorSpec((None, n), tf.int64),
            tf.TensorSpec((None, n), tf.float32),
            tf.TensorSpec((None, n), tf.float32),
        ],
    )
    def run(m, lab, s, a):
        return layer(m, lab, s, mask_area=a)

    def repeat(x):
        return np.repeat(x, 3, axis=0)

    out = to_numpy(run(repeat(masks), repeat(labels), repeat(scores), repeat(area)))
    for row in range(3):
        assert_matches(out, case, row=row)


def test_empty_input_under_jit():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function needs the TensorFlow backend")
    masks, labels, scores, _ = inputs_for("empty")
    layer = MatrixNMS(max_detections=5)
    out = to_numpy(tf.function(layer, jit_compile=True)(masks, labels, scores))
    np.testing.assert_array_equal(out["num_detections"], [0])
    np.testing.assert_array_equal(out["indices"], np.full((1, 5), -1))


def test_functional_model_output_shapes():
    masks = keras.Input((30, 8, 8), dtype="bool")
    labels = keras.Input((30,), dtype="int32")
    scores = keras.Input((30,), dtype="float32")
    out = MatrixNMS(max_detections=7)(masks, labels, scores)
    assert out["scores"].shape == (None, 7)
    assert out["labels"].shape == (None, 7)
    assert out["indices"].shape == (None, 7)
    assert out["num_detections"].shape == (None,)
    model = keras.Model([masks, labels, scores], out)
    rng = np.random.default_rng(0)
    result = model.predict(
        [
            rng.random((2, 30, 8, 8)) > 0.5,
            rng.integers(0, 3, (2, 30)),
            rng.random((2, 30)),
        ],
        verbose=0,
    )
    assert result["indices"].shape == (2, 7)


@pytest.mark.tflite
def test_tflite_builtins_only(tmp_path):
    """keras.export -> SavedModel -> TFLite with builtin ops only, then run."""
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export needs the TensorFlow backend")
    case = "gauss_solov2cfg"
    masks, labels, scores, area = inputs_for(case)
    layer = layer_for(case)
    layer(masks, labels, scores, mask_area=area)  # build
    archive = keras.export.ExportArchive()
    archive.track(layer)
    archive.add_endpoint(
        "serve",
        lambda masks, labels, scores, area: layer(masks, labels, scores, area),
        input_signature=[
            keras.InputSpec(shape=masks.shape, dtype="bool"),
            keras.InputSpec(shape=labels.shape, dtype="int32"),
            keras.InputSpec(shape=scores.shape, dtype="float32"),
            keras.InputSpec(shape=area.shape, dtype="float32"),
        ],
    )
    archive.write_out(str(tmp_path / "saved_model"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(tmp_path / "saved_model"), signature_keys=["serve"]
    )
    # Builtins only: a Flex op would make the conversion fail.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    tflite_model = converter.convert()
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:
        litert = tf.lite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated
        interpreter = litert.Interpreter(model_content=tflite_model)
    ops_used = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(name.startswith("Flex") for name in ops_used), ops_used
    out = interpreter.get_signature_runner("serve")(
        masks=masks,
        labels=labels.astype("int32"),
        scores=scores,
        area=area,
    )
    assert_matches({k: np.asarray(v) for k, v in out.items()}, case)


JAX_SCRIPT = """
import sys
import numpy as np
import jax
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, sys.argv[3])
import matrix_nms_cases as t
for case in sorted(t.CASES):
    masks, labels, scores, area = t.inputs_for(case)
    layer = t.layer_for(case)
    fn = jax.jit(lambda m, lab, s, a: layer(m, lab, s, mask_area=a))
    t.assert_matches(t.to_numpy(fn(masks, labels, scores, area)), case)
    print("ok", case)
"""


@pytest.mark.jax
def test_jax_backend_under_jit():
    """The fixture cases on the JAX backend, inside `jax.jit` (subprocess)."""
    out = run_on_jax(
        JAX_SCRIPT,
        str(REPO),
        str(pathlib.Path(__file__).parent),
        str(TESTS),
        timeout=300,
    )
    assert out.count("ok ") == len(CASES)
