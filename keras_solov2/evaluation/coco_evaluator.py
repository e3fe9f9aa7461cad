"""COCO mask and box AP of a SOLOv2 model, computed with pycocotools."""

import contextlib
import io

import numpy as np
from pycocotools.cocoeval import COCOeval

from keras_solov2.evaluation.coco_results import predict_source
from keras_solov2.evaluation.ground_truth import (
    coco_source,
    empty_results,
    evaluated_image_ids,
)

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
IOU_TYPES = ("segm", "bbox")
# The per-class report's key of each IoU type's AP.
_PER_CLASS_KEYS = {"segm": "mask_ap", "bbox": "box_ap"}


def evaluate(
    model,
    data,
    image_dir=None,
    *,
    iou_types=IOU_TYPES,
    batch_size=1,
    max_images=None,
    progress=True,
    apply_exif_orientation=True,
    on_invalid="raise",
):
    """COCO mask and box AP, per-class AP and PR curves of `model` on `data`.

    Predicts the images with `predict_to_coco` (same `model` contract, same
    label-to-category mapping), or takes the COCO results given instead of
    a model, and evaluates them with pycocotools' `COCOeval` on the
    evaluated images: the masks (`"segm"`) and the boxes (`"bbox"`, the
    boxes of the predicted masks for a SOLOv2).

    Args:
        model: a `keras_solov2.SOLOv2` or an object with its `predict`
            contract (see `predict_to_coco`), or a list of COCO result
            dicts (from `predict_to_coco`, or a `results.json` loaded) to
            evaluate as they are.
        data: the ground truth: the path of a COCO instances json (its
            images in `image_dir`; without `image_dir` the json is read as
            it is, to evaluate results), a `keras_solov2.data.CocoDataset`,
            or a `pycocotools.coco.COCO` (its images in `image_dir`).
        image_dir: str. The image folder of a json or `COCO` `data`.
        iou_types: sequence of `"segm"` and `"bbox"`. What to evaluate.
            Defaults to both.
        batch_size: int. Images per `predict` call. Defaults to `1`.
        max_images: optional int. Evaluate only the first `max_images`
            images (by image id). Defaults to all images.
        progress: bool. Whether to show a progress bar and print
            pycocotools' summary tables. Defaults to `True`.
        apply_exif_orientation: bool. See `keras_solov2.io.load_image`.
            Defaults to `True`.
        on_invalid: str. What an invalid annotation or image file of a json
            `data` does: `"raise"` an error that names it, or `"skip"` it and
            count it and leave it out of the ground truth, as in training
            (`keras_solov2.data.CocoDataset`). Defaults to `"raise"`.

    Returns:
        A dict. `"segm"` and `"bbox"` (those of `iou_types`): the 12 COCO
        statistics each, `"AP"`, `"AP50"`, `"AP75"`, `"APs"`, `"APm"`,
        `"APl"`, `"AR1"`, `"AR10"`, `"AR100"`, `"ARs"`, `"ARm"`, `"ARl"`
        (like pycocotools, `-1.0` when no ground truth falls in the area
        range). `"per_class"`: a list of `{"category_id", "name",
        "mask_ap", "box_ap", "num_instances"}` dicts in category-id order
        (AP over IoU 0.5:0.95, `-1.0` for a category without ground
        truth). `"pr_curves"`: per IoU type, `"recall"` (the 101 recall
        points) and the precision there at IoU `"iou_0.50"`, `"iou_0.75"`
        and averaged over `"iou_0.50:0.95"` (classes averaged where
        defined). `"results"`: the COCO result dicts evaluated.

    Example:
    >>> report = keras_solov2.evaluation.evaluate(
    ...     model, "annotations.json", "images/")
    >>> masks, boxes = report["segm"], report["bbox"]
    >>> masks["AP"], boxes["AP"]

    Reference: SOLOv2 (https://arxiv.org/abs/2003.10152).
    """
    iou_types = tuple(iou_types)
    if not iou_types or set(iou_types) - set(IOU_TYPES):
        raise ValueError(f"`iou_types` must be some of {IOU_TYPES}, got {iou_types!r}.")
    if isinstance(model, (list, tuple)):  # results, not a model
        coco_gt, _, _ = coco_source(data, image_dir, on_invalid, progress=False)
        image_ids = evaluated_image_ids(coco_gt, max_images)
        results = list(model)
    else:
        coco_gt, results, image_ids = predict_source(
            model,
            data,
            image_dir,
            batch_size=batch_size,
            max_images=max_images,
            progress=progress,
            apply_exif_orientation=apply_exif_orientation,
            on_invalid=on_invalid,
        )
    report = {"per_class": [], "pr_curves": {}, "results": results}
    per_class = {}
    for iou_type in iou_types:
        evaluator = cocoeval(coco_gt, results, iou_type, progress, image_ids)
        report[iou_type] = stats(evaluator)
        report["pr_curves"][iou_type] = _pr_curves(evaluator)
        per_class[iou_type] = _per_class_ap(evaluator)
    categories = coco_gt.loadCats(coco_gt.getCatIds())
    for category in sorted(categories, key=lambda c: c["id"]):
        cid = int(category["id"])
        row = {"category_id": cid, "name": category.get("name", str(cid))}
        for iou_type in iou_types:
            row[_PER_CLASS_KEYS[iou_type]] = per_class[iou_type].get(cid, -1.0)
        row["num_instances"] = len(
            coco_gt.getAnnIds(imgIds=image_ids, catIds=[cid], iscrowd=False)
        )
        report["per_class"].append(row)
    return report


def cocoeval(coco_gt, results, iou_type, verbose, image_ids):
    """The accumulated `COCOeval` of `results` (summarised: `stats` is set)."""
    quiet = (
        contextlib.nullcontext()
        if verbose
        else contextlib.redirect_stdout(io.StringIO())
    )
    with quiet:
        if results:
            # loadRes adds keys to the dicts it gets: give it copies.
            coco_dt = coco_gt.loadRes([dict(result) for result in results])
        else:
            coco_dt = empty_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def stats(evaluator):
    """The 12 statistics of a summarised `COCOeval`, by `STAT_NAMES`."""
    return {
        name: float(value)
        for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)
    }


def _per_class_ap(evaluator):
    """AP over IoU 0.5:0.95 (all areas, 100 detections) per category id;
    `-1.0` for a category without ground truth."""
    precision = evaluator.eval["precision"]  # (iou, recall, class, area, maxdet)
    values = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        values[int(category_id)] = float(p.mean()) if p.size else -1.0
    return values


def _pr_curves(evaluator):
    """Precision over the 101 recall points: at IoU 0.5, 0.75 and averaged
    over 0.5:0.95 (classes averaged where defined; all areas, 100 dets)."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (iou, recall, class)
    masked = np.ma.masked_less(precision, 0)
    return {
        "recall": [float(r) for r in evaluator.params.recThrs],
        "iou_0.50": np.ma.filled(masked[0].mean(axis=1), 0.0).tolist(),
        "iou_0.75": np.ma.filled(masked[5].mean(axis=1), 0.0).tolist(),
        "iou_0.50:0.95": np.ma.filled(masked.mean(axis=(0, 2)), 0.0).tolist(),
    }
