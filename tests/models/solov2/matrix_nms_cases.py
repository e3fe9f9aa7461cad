"""The mmdetection cases that the MatrixNMS tests share: mmdet's inputs and
outputs from `tests/fixtures/matrix_nms_test.npz` (see test_matrix_nms.py),
a layer configured like each case, and the comparison with mmdet's result."""

import json

import numpy as np
from helpers import FIXTURES
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
