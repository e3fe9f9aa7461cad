"""MatrixNMS against mmdetection's `mask_matrix_nms`.

The expected values come from `tests/fixtures/matrix_nms_test.npz`, written by
mmdet 3.3.0 itself (see `tests/fixtures/matrix_nms_test.json` for each case's
arguments, and `../shared/reference/mmdet/README.md`, in the project's shared
folder next to the repository, for how it was made). Under jit, in a
functional model, in TFLite and on JAX: test_matrix_nms_compiled.py.
"""

import keras
import numpy as np
import pytest
from matrix_nms_cases import (
    CASES,
    DATA,
    assert_matches,
    expected_for,
    inputs_for,
    layer_for,
    to_numpy,
)

from keras_solov2.models.solov2.matrix_nms import MatrixNMS


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
