"""COCO evaluation of SOLOv2 predictions, and their drawing.

`evaluate` gives COCO mask and box AP (pycocotools), `predict_to_coco` the
COCO result dicts, and `keras_solov2.callbacks.CocoEvaluation` runs
`evaluate` during `fit`.
"""

import warnings

from keras_solov2.evaluation.coco_evaluator import STAT_NAMES, evaluate
from keras_solov2.evaluation.coco_results import predict_to_coco
from keras_solov2.evaluation.visualization import (
    draw_instances,
    save_ground_truth_grid,
    save_prediction_grid,
)


def __getattr__(name):
    """The names before `evaluate` and `predict_to_coco`, for one release."""
    from keras_solov2.evaluation._deprecated import DEPRECATED

    if name not in DEPRECATED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value, instead = DEPRECATED[name]
    warnings.warn(
        f"keras_solov2.evaluation.{name} is deprecated and will be removed in "
        f"the next release; use {instead}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value


__all__ = [
    "STAT_NAMES",
    "draw_instances",
    "evaluate",
    "predict_to_coco",
    "save_ground_truth_grid",
    "save_prediction_grid",
]
