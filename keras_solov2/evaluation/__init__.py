"""COCO evaluation and visualisation of SOLOv2 predictions."""

from keras_solov2.evaluation.coco_evaluator import (
    STAT_NAMES,
    check_coco_paths,
    coco_evaluation,
    evaluate_model,
    evaluate_results,
    load_image,
    predict_coco_results,
    predictions_to_coco_results,
)
from keras_solov2.evaluation.visualization import draw_instances, save_prediction_grid

__all__ = [
    "STAT_NAMES",
    "check_coco_paths",
    "coco_evaluation",
    "draw_instances",
    "evaluate_model",
    "evaluate_results",
    "load_image",
    "predict_coco_results",
    "predictions_to_coco_results",
    "save_prediction_grid",
]
