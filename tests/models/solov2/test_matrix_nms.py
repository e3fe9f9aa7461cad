"""MatrixNMS against mmdetection's `mask_matrix_nms`.

The expected values come from `tests/fixtures/matrix_nms_test.npz`, written by
mmdet 3.3.0 itself (see `tests/fixtures/matrix_nms_test.json` for each case's
arguments, and `../shared/reference/mmdet/README.md`, in the project's shared
folder next to the repository, for how it was made).
"""

import json
import pathlib
import warnings

import keras
import numpy as np
import pytest
from helpers import FIXTURES, REPO, TESTS, run_on_jax
from keras import ops

from keras_solov2.models.solov2.matrix_nms import MatrixNMS

DATA = np.load(FIXTURES / "matrix_nms_test.npz")
CASES = json.loads((FIXTURES / "matrix_nms_test.json").read_text())
SCORE_ATOL = 1e-5


def layer_for(case, **overrides):
    """A MatrixNMS configured like mmdet's `mask_matrix_nms(**kwargs)` call."""
    kwargs = CASES[case]["kwargs"]
    max_num = kwargs.get("max_num", -1)
    config = dict(
        kernel=kwargs.get("kernel", "gaussian"),
        sigma=kwargs.get("sigma", 2.0),
        filter_threshold=kwargs.get("filter_thr", -1),
        pre_nms_top_k=kwargs.get("nms_pre", -1),
        # mmdet's max_num=-1 keeps everything: one slot per input.
        max_detections=max_num if max_num > 0 else CASES[case]["n_in"],
    )
    config.update(overrides)
    return MatrixNMS(**config)


def inputs_for(case):
    """Batched (batch=1) inputs of a case: masks, labels, scores, mask_area."""
    area = None
    if CASES[case]["mask_area_given"]:
        area = DATA[f"{case}__in_mask_area"][None]
    return (
        DATA[f"{case}__in_masks"][None],
        DATA[f"{case}__in_labels"][None],
        DATA[f"{case}__in_scores"][None],
        area,
    )


def expected_for(case):
    return (
        DATA[f"{case}__out_keep_inds"],
        DATA[f"{case}__out_labels"],
        DATA[f"{case}__out_scores"],
    )


def to_numpy(outputs):
    return {k: ops.convert_to_numpy(v) for k, v in outputs.items()}


def assert_matches(out, case, row=0, index_map=None):
    """Checks one batch row of the layer output against mmdet's result."""
    keep, labels, scores = expected_for(case)
    n = len(keep)
    assert int(out["num_detections"][row]) == n
    indices = out["indices"][row]
    if index_map is not None:
        indices = np.where(indices >= 0, index_map[indices], -1)
    np.testing.assert_array_equal(indices[:n], keep)
    np.testing.assert_array_equal(out["labels"][row, :n], labels)
    np.testing.assert_allclose(out["scores"][row, :n], scores, rtol=0, atol=SCORE_ATOL)
    # Every slot after the detections is padding.
    assert np.all(indices[n:] == -1)
    assert np.all(out["labels"][row, n:] == -1)
    assert np.all(out["scores"][row, n:] == 0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_mmdet(case):
    masks, labels, scores, area = inputs_for(case)
    out = to_numpy(layer_for(case)(masks, labels, scores, mask_area=area))
    assert out["scores"].dtype == np.float32
    assert out["labels"].dtype == np.int32
    assert out["indices"].dtype == np.int32
    assert out["num_detections"].dtype == np.int32
    assert_matches(out, case)
    # The fixture is self-consistent: mmdet's output masks are the kept inputs.
    keep = expected_for(case)[0]
    np.testing.assert_array_equal(
        DATA[f"{case}__in_masks"][keep], DATA[f"{case}__out_masks"]
    )


@pytest.mark.parametrize("case", ["gauss_solov2cfg", "gauss_sigma05_nmspre"])
def test_flat_masks_and_int_masks(case):
    masks, labels, scores, area = inputs_for(case)
    flat = masks.reshape(masks.shape[:2] + (-1,)).astype("int32")
    out = to_numpy(layer_for(case)(flat, labels, scores, mask_area=area))
    assert_matches(out, case)


def test_batch_rows_are_independent():
    """Row 1 is row 0 shuffled; both must give mmdet's result."""
    case = "gauss_solov2cfg"
    masks, labels, scores, area = inputs_for(case)
    perm = np.random.default_rng(0).permutation(masks.shape[1])
    out = to_numpy(
        layer_for(case)(
            np.concatenate([masks, masks[:, perm]]),
            np.concatenate([labels, labels[:, perm]]),
            np.concatenate([scores, scores[:, perm]]),
            mask_area=np.concatenate([area, area[:, perm]]),
        )
    )
    assert_matches(out, case, row=0)
    assert_matches(out, case, row=1, index_map=perm)


@pytest.mark.parametrize("case", ["gauss_solov2cfg", "linear_filter", "gauss_default"])
def test_padding_entries_are_ignored(case):
    """Garbage entries labelled -1, interleaved with the real ones, change nothing.

    They have the highest scores and duplicate real masks, so they would both
    take `pre_nms_top_k` slots and suppress real masks if they were used.
    """
    masks, labels, scores, area = inputs_for(case)
    rng = np.random.default_rng(1)
    n, n_pad = masks.shape[1], 40
    pad_masks = np.concatenate(
        [masks[:, : n_pad // 2], rng.random((1, n_pad // 2) + masks.shape[2:]) > 0.5],
        axis=1,
    )
    all_masks = np.concatenate([masks, pad_masks], axis=1)
    all_labels = np.concatenate([labels, np.full((1, n_pad), -1, labels.dtype)], axis=1)
    all_scores = np.concatenate(
        [scores, rng.uniform(1.0, 2.0, (1, n_pad)).astype("float32")], axis=1
    )
    all_area = None
    if area is not None:
        all_area = np.concatenate([area, pad_masks.sum((2, 3)).astype("float32")], 1)
    # Interleave: position p of the new input holds original entry perm[p].
    perm = rng.permutation(n + n_pad)
    index_map = np.where(perm < n, perm, -1)
    out = to_numpy(
        layer_for(case)(
            all_masks[:, perm],
            all_labels[:, perm],
            all_scores[:, perm],
            mask_area=None if all_area is None else all_area[:, perm],
        )
    )
    assert np.all(index_map[out["indices"][0][out["indices"][0] >= 0]] >= 0)
    assert_matches(out, case, index_map=index_map)


def test_nan_padding_is_ignored():
    """Padding may hold anything, even NaN masks, areas and scores."""
    case = "gauss_solov2cfg"
    masks, labels, scores, area = inputs_for(case)
    n_pad = 7
    nan = np.full((1, n_pad), np.nan, "float32")
    out = to_numpy(
        layer_for(case)(
            np.concatenate(
                [
                    masks.astype("float32"),
                    np.full((1, n_pad) + masks.shape[2:], np.nan),
                ],
                axis=1,
            ),
            np.concatenate([labels, np.full((1, n_pad), -1)], axis=1),
            np.concatenate([scores, nan], axis=1),
            mask_area=np.concatenate([area, nan], axis=1),
        )
    )
    assert_matches(out, case)


def test_filter_threshold_is_inclusive():
    """mmdet keeps `score >= filter_thr`."""
    masks = np.eye(3, dtype=bool).reshape(1, 3, 3)  # disjoint masks
    scores = np.array([[0.9, 0.05, 0.04]], "float32")
    out = to_numpy(
        MatrixNMS(filter_threshold=0.05, max_detections=3)(
            masks, np.zeros((1, 3), "int32"), scores
        )
    )
    np.testing.assert_array_equal(out["indices"], [[0, 1, -1]])


def test_all_padding_gives_no_detections():
    masks = np.ones((2, 5, 4, 4), bool)
    out = to_numpy(
        MatrixNMS(max_detections=3)(masks, np.full((2, 5), -1), np.ones((2, 5)))
    )
    np.testing.assert_array_equal(out["num_detections"], [0, 0])
    np.testing.assert_array_equal(out["indices"], np.full((2, 3), -1))
    np.testing.assert_array_equal(out["labels"], np.full((2, 3), -1))
    np.testing.assert_array_equal(out["scores"], np.zeros((2, 3)))


def test_class_agnostic_equals_single_class():
    """`class_aware=False` is the class-aware NMS with every label the same."""
    case = "gauss_sigma05_nmspre"
    masks, labels, scores, area = inputs_for(case)
    agnostic = to_numpy(
        layer_for(case, class_aware=False)(masks, labels, scores, mask_area=area)
    )
    one_class = to_numpy(
        layer_for(case)(masks, np.zeros_like(labels), scores, mask_area=area)
    )
    np.testing.assert_array_equal(agnostic["indices"], one_class["indices"])
    np.testing.assert_allclose(agnostic["scores"], one_class["scores"], atol=1e-7)
    # Labels are still reported, and cross-class suppression changes the result.
    n = agnostic["num_detections"][0]
    np.testing.assert_array_equal(
        agnostic["labels"][0, :n], labels[0, agnostic["indices"][0, :n]]
    )
    keep, _, expected_scores = expected_for(case)
    assert n != len(keep) or not np.allclose(agnostic["scores"][0, :n], expected_scores)


def test_degenerate_masks_give_finite_scores():
    """Empty masks and exact duplicates (linear: 1 - compensate = 0)."""
    masks = np.zeros((1, 4, 6, 6), bool)
    masks[0, 0, :3, :3] = True
    masks[0, 1, :3, :3] = True  # duplicate of mask 0
    masks[0, 2, :3, :3] = True  # duplicate of mask 0 and 1
    labels = np.zeros((1, 4), "int32")
    scores = np.array([[0.9, 0.8, 0.7, 0.6]], "float32")
    for kernel in ("gaussian", "linear"):
        layer = MatrixNMS(kernel=kernel, filter_threshold=-1, max_detections=4)
        out = to_numpy(layer(masks, labels, scores))
        assert np.all(np.isfinite(out["scores"]))
        assert out["indices"][0, 0] == 0
        assert out["scores"][0, 0] == pytest.approx(0.9)
    # Linear: the duplicate of a duplicate is fully suppressed (mmdet: NaN).
    assert out["scores"][0, -1] == 0
    # The empty mask (index 3) is not suppressed by anything.
    position = list(out["indices"][0]).index(3)
    assert out["scores"][0, position] == pytest.approx(0.6)


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


def test_get_config_round_trip():
    layer = MatrixNMS(
        kernel="linear",
        sigma=0.5,
        filter_threshold=0.1,
        pre_nms_top_k=50,
        max_detections=20,
        class_aware=False,
        name="nms",
    )
    config = layer.get_config()
    for key, value in dict(
        kernel="linear",
        sigma=0.5,
        filter_threshold=0.1,
        pre_nms_top_k=50,
        max_detections=20,
        class_aware=False,
    ).items():
        assert config[key] == value
    restored = MatrixNMS.from_config(config)
    assert restored.get_config() == config
    # Through the Keras registry as well.
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert isinstance(restored, MatrixNMS)
    assert restored.get_config() == config
    masks, labels, scores, area = inputs_for("linear_filter")
    a = to_numpy(layer(masks, labels, scores, mask_area=area))
    b = to_numpy(restored(masks, labels, scores, mask_area=area))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_invalid_kernel():
    with pytest.raises(ValueError, match="kernel"):
        MatrixNMS(kernel="hard")


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
import test_matrix_nms as t
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
