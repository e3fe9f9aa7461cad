"""The evaluation names before `evaluate` and `predict_to_coco`.

Kept for one release: `keras_solov2.evaluation` serves them through its
module `__getattr__`, which warns (`DeprecationWarning`) with the name to
use instead. Each gives what it gave before.
"""

from keras_solov2 import io
from keras_solov2.evaluation.coco_evaluator import cocoeval, evaluate, stats
from keras_solov2.evaluation.coco_results import coco_results_of_batch, predict_source

# The options the old functions took after `image_dir`, in their order.
_OPTIONS = (
    "batch_size",
    "max_images",
    "progress",
    "apply_exif_orientation",
    "on_invalid",
)


def _options(args, kwargs):
    """The old functions' options, positional or not, as keywords."""
    if len(args) > len(_OPTIONS):
        raise TypeError(f"Got {len(args)} options, the most is {len(_OPTIONS)}.")
    return {**dict(zip(_OPTIONS[: len(args)], args, strict=True)), **kwargs}


def evaluate_model(model, annotation_file, image_dir, *args, **kwargs):
    """Mask AP: `evaluate(..., iou_types=("segm",))["segm"]`."""
    options = _options(args, kwargs)
    return evaluate(model, annotation_file, image_dir, iou_types=("segm",), **options)[
        "segm"
    ]


def coco_evaluation(model, annotation_file, image_dir, *args, **kwargs):
    """The report of `evaluate`."""
    return evaluate(model, annotation_file, image_dir, **_options(args, kwargs))


def predict_coco_results(model, annotation_file, image_dir, *args, **kwargs):
    """`(coco_gt, results, image_ids)`; `predict_to_coco` gives `results`."""
    options = _options(args, kwargs)
    return predict_source(model, annotation_file, image_dir, **options)


def evaluate_results(coco_gt, results, iou_type="segm", verbose=True, image_ids=None):
    """The 12 statistics: `evaluate(results, coco_gt, ...)[iou_type]`."""
    return stats(cocoeval(coco_gt, results, iou_type, verbose, image_ids))


def predictions_to_coco_results(predictions, image_ids, category_ids):
    """The COCO results of one batch of predictions; `predict_to_coco`
    predicts and converts."""
    return coco_results_of_batch(predictions, image_ids, category_ids)


# old name -> (object, what to use instead)
DEPRECATED = {
    "evaluate_model": (
        evaluate_model,
        "keras_solov2.evaluation.evaluate(model, annotation_file, image_dir, "
        'iou_types=("segm",))["segm"]',
    ),
    "coco_evaluation": (
        coco_evaluation,
        "keras_solov2.evaluation.evaluate(model, annotation_file, image_dir)",
    ),
    "predict_coco_results": (
        predict_coco_results,
        "keras_solov2.evaluation.predict_to_coco(model, annotation_file, image_dir)",
    ),
    "evaluate_results": (
        evaluate_results,
        "keras_solov2.evaluation.evaluate(results, coco_gt, "
        "iou_types=(iou_type,))[iou_type]",
    ),
    "predictions_to_coco_results": (
        predictions_to_coco_results,
        "keras_solov2.evaluation.predict_to_coco(model, images, image_ids=...)",
    ),
    "load_image": (io.load_image, "keras_solov2.io.load_image"),
    "check_coco_paths": (io.check_coco_paths, "keras_solov2.io.check_coco_paths"),
}
