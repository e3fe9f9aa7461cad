"""COCO mask AP for SOLOv2 predictions, computed with pycocotools."""

import contextlib
import io
import os

import keras
import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_solov2.data.coco import CocoDataset
from keras_solov2.io import check_coco_paths, load_image
from keras_solov2.layers.solov2_decoder import paste_masks

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


def _to_numpy(x):
    if isinstance(x, (list, tuple)):
        return [_to_numpy(v) for v in x]
    return np.asarray(keras.ops.convert_to_numpy(x))


def _xyxy_to_xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def predictions_to_coco_results(predictions, image_ids, category_ids):
    """Converts a batch of SOLOv2 predictions to COCO result dicts.

    Only the first `num_detections[b]` entries of each image whose label is
    not negative are converted; the rest is padding. Each mask becomes a
    compressed RLE whose `counts` is a `str`, so the results can be written
    to JSON and passed to `COCO.loadRes`.

    Args:
        predictions: dict. The output of a SOLOv2 model's `predict` for a
            batch of `B` images, with
            - `"masks"`: `(B, D, H, W)` bool / uint8, at each image's
              original size (a list of `(D, H_b, W_b)` arrays is accepted
              for images of different sizes);
            - `"labels"`: int `(B, D)`, contiguous class index, `-1` for
              padding;
            - `"scores"`: float `(B, D)`;
            - `"boxes"` (optional): `(B, D, 4)` boxes `(x1, y1, x2, y2)` in
              pixels. Boxes of zero width or height (SOLOv2 predicts none)
              and missing boxes are replaced by the box of the mask;
            - `"num_detections"` (optional): int `(B,)`. Defaults to `D`.
        image_ids: sequence of `B` COCO image ids.
        category_ids: sequence of COCO category ids; contiguous label `i`
            maps to `category_ids[i]` (the i-th category in ascending id
            order for the datasets of `keras_solov2`).

    Returns:
        A list of dicts with keys `"image_id"`, `"category_id"`,
        `"segmentation"` (RLE), `"score"` and `"bbox"` (`[x, y, w, h]`).

    Example:
    >>> results = keras_solov2.evaluation.predictions_to_coco_results(
    ...     model.predict(images), image_ids=[139], category_ids=[1, 2, 3]
    ... )
    """
    masks = _to_numpy(predictions["masks"])
    labels = _to_numpy(predictions["labels"])
    scores = _to_numpy(predictions["scores"])
    boxes = predictions.get("boxes")
    boxes = None if boxes is None else _to_numpy(boxes)
    num_detections = predictions.get("num_detections")
    if num_detections is None:
        num_detections = [len(row) for row in labels]
    num_detections = np.reshape(_to_numpy(num_detections), (-1,))
    category_ids = [int(c) for c in category_ids]
    if len(image_ids) != len(labels):
        raise ValueError(
            f"Got {len(image_ids)} image ids for a batch of {len(labels)} images."
        )

    results = []
    for b, image_id in enumerate(image_ids):
        for d in range(int(num_detections[b])):
            label = int(labels[b][d])
            if label < 0:
                continue
            if label >= len(category_ids):
                raise ValueError(
                    f"Label {label} has no category id (only "
                    f"{len(category_ids)} categories)."
                )
            mask = np.asfortranarray(np.asarray(masks[b][d]).astype(np.uint8))
            rle = mask_util.encode(mask)
            rle["counts"] = rle["counts"].decode("ascii")
            bbox = None if boxes is None else _xyxy_to_xywh(boxes[b][d])
            if bbox is None or bbox[2] <= 0 or bbox[3] <= 0:
                bbox = [float(v) for v in mask_util.toBbox(rle)]
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": category_ids[label],
                    "segmentation": rle,
                    "score": float(scores[b][d]),
                    "bbox": bbox,
                }
            )
    return results


def _empty_results(coco_gt):
    """A `COCO` object with the ground truth's images and no detection."""
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def evaluate_results(coco_gt, results, iou_type="segm", verbose=True, image_ids=None):
    """Runs the COCO evaluation of a list of result dicts.

    Args:
        coco_gt: `pycocotools.coco.COCO`. The ground truth.
        results: list of COCO result dicts, as returned by
            `predictions_to_coco_results`. May be empty.
        iou_type: str. `"segm"` (mask AP) or `"bbox"`. Defaults to `"segm"`.
        verbose: bool. Whether to print pycocotools' summary table.
            Defaults to `True`.
        image_ids: optional sequence of image ids to evaluate on. Defaults
            to every image of `coco_gt` (images without results then count
            as misses).

    Returns:
        A dict of the 12 COCO statistics: `"AP"`, `"AP50"`, `"AP75"`,
        `"APs"`, `"APm"`, `"APl"`, `"AR1"`, `"AR10"`, `"AR100"`, `"ARs"`,
        `"ARm"`, `"ARl"`. Like pycocotools, a statistic is `-1.0` when no
        ground truth falls in its area range.

    Example:
    >>> stats = keras_solov2.evaluation.evaluate_results(coco_gt, results)
    >>> stats["AP"]
    """
    evaluator = _cocoeval(coco_gt, results, iou_type, verbose, image_ids)
    return _stats(evaluator)


def _cocoeval(coco_gt, results, iou_type, verbose, image_ids):
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
            coco_dt = _empty_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _stats(evaluator):
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
    curves = {
        "recall": [float(r) for r in evaluator.params.recThrs],
        "iou_0.50": np.ma.filled(masked[0].mean(axis=1), 0.0).tolist(),
        "iou_0.75": np.ma.filled(masked[5].mean(axis=1), 0.0).tolist(),
        "iou_0.50:0.95": np.ma.filled(masked.mean(axis=(0, 2)), 0.0).tolist(),
    }
    return curves


def _ground_truth(
    annotation_file,
    image_dir,
    on_invalid="raise",
    apply_exif_orientation=True,
    progress=True,
):
    """The COCO ground truth to evaluate against, checked as training checks it.

    The annotations and image files go through `keras_solov2.data.CocoDataset`
    with the same `on_invalid`: an unknown image or category id, a malformed
    segmentation, an empty mask, a bad bbox, or a missing or unreadable image
    raises an error that names it (`"raise"`), or is left out of the ground
    truth and counted (`"skip"`) instead of being dropped without a word by
    pycocotools. Crowd annotations stay (pycocotools ignores the detections
    that fall on them).

    Args:
        annotation_file: str. COCO instances json.
        image_dir: str. The image folder.
        on_invalid: str. `"raise"` or `"skip"`. Defaults to `"raise"`.
        apply_exif_orientation: bool. See `load_image`. Defaults to `True`.
        progress: bool. Progress bar while checking the images (`"skip"`).

    Returns:
        `(coco_gt, dataset)`: a `pycocotools.coco.COCO` and the
        `CocoDataset` whose `stats`, `skipped_annotations` and
        `skipped_images` say what was left out.
    """
    check_coco_paths(annotation_file, image_dir)
    dataset = CocoDataset(
        annotation_file,
        image_dir,
        on_invalid=on_invalid,
        apply_exif_orientation=apply_exif_orientation,
        progress=progress,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(annotation_file)
    if not (dataset.skipped_annotations or dataset.skipped_images):
        return coco_gt, dataset
    kept_images = set(dataset.image_ids)
    skipped = {ann_id for ann_id, _, _ in dataset.skipped_annotations}
    data = dict(coco_gt.dataset)
    data["images"] = [i for i in data.get("images", []) if i["id"] in kept_images]
    data["annotations"] = [
        a
        for a in data.get("annotations", [])
        if a.get("id") not in skipped and a.get("image_id") in kept_images
    ]
    kept = COCO()
    kept.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        kept.createIndex()
    return kept, dataset


def _predict(model, images):
    """`model.predict` on a list of images: one batch if they share a shape."""
    if len({image.shape for image in images}) == 1:
        batches = [np.stack(images)]
    else:
        batches = [image[None] for image in images]
    return [
        _with_masks(model, _to_numpy_dict(model.predict(b, verbose=0)), b)
        for b in batches
    ]


def _with_masks(model, predictions, images):
    """Pastes `mask_probs` (`mask_resolution="features"`) at the original size."""
    if "masks" in predictions or "mask_probs" not in predictions:
        return predictions
    height, width = images.shape[1:3]
    masks = paste_masks(
        predictions["mask_probs"],
        model.image_converter.resized_size(int(height), int(width)),
        (int(height), int(width)),
        mask_threshold=model.mask_threshold,
        mask_stride=model.decoder.mask_stride,
        num_detections=predictions["num_detections"],
    )
    return {**predictions, "masks": _to_numpy(masks)}


def _to_numpy_dict(predictions):
    return {key: _to_numpy(value) for key, value in predictions.items()}


def _check_mask_size(predictions, infos):
    masks = predictions["masks"]
    for b, info in enumerate(infos):
        size = tuple(np.shape(masks[b])[-2:])
        if size != (info["height"], info["width"]):
            raise ValueError(
                f"Image {info['id']} is {info['height']}x{info['width']} but the "
                f"model returned masks of size {size[0]}x{size[1]}; masks must "
                "be at the original image size."
            )


def evaluate_model(
    model,
    annotation_file,
    image_dir,
    batch_size=1,
    max_images=None,
    progress=True,
    apply_exif_orientation=True,
    on_invalid="raise",
):
    """Predicts a COCO-format dataset with `model` and returns its mask AP.

    Images are read with PIL as RGB uint8 `(H, W, 3)` arrays (`load_image`),
    in ascending image-id order. The model gets uint8 images and must
    return, at each image's original size, the dict described in
    `predictions_to_coco_results`. Contiguous label `i` maps to
    `model.category_ids[i]` when the model has them (a model trained on a
    `CocoDataset`), else to the dataset's categories in ascending id order.

    Args:
        model: a SOLOv2 model, or any object with a
            `predict(images, verbose=0)` method following that contract.
        annotation_file: str. Path to a COCO instances JSON file.
        image_dir: str. Directory holding the `file_name` of every image.
        batch_size: int. Number of images per `predict` call. Images of
            different sizes in one chunk are predicted one by one.
            Defaults to `1`.
        max_images: optional int. Evaluate only the first `max_images`
            images (by image id). Defaults to all images.
        progress: bool. Whether to show a `keras.utils.Progbar`. Defaults
            to `True`.
        apply_exif_orientation: bool. See `load_image`. Defaults to `True`.
        on_invalid: str. What an invalid annotation or image does:
            `"raise"` an error that names it, or `"skip"` it and count it
            (see `_ground_truth`). Defaults to `"raise"`.

    Returns:
        The dict of `evaluate_results`, computed on the evaluated images
        only. Also prints pycocotools' summary when `progress` is `True`.

    Example:
    >>> stats = keras_solov2.evaluation.evaluate_model(
    ...     model,
    ...     "annotations/instances_val2017.json",
    ...     "val2017",
    ...     max_images=50,
    ... )
    """
    coco_gt, results, image_ids = predict_coco_results(
        model,
        annotation_file,
        image_dir,
        batch_size=batch_size,
        max_images=max_images,
        progress=progress,
        apply_exif_orientation=apply_exif_orientation,
        on_invalid=on_invalid,
    )
    return evaluate_results(coco_gt, results, verbose=progress, image_ids=image_ids)


def predict_coco_results(
    model,
    annotation_file,
    image_dir,
    batch_size=1,
    max_images=None,
    progress=True,
    apply_exif_orientation=True,
    on_invalid="raise",
):
    """Predicts a COCO-format dataset: `(coco_gt, results, image_ids)`.

    The prediction half of `evaluate_model` (same arguments): `results` is
    the list of COCO result dicts (RLE masks, boxes, scores, the dataset's
    own category ids), ready for `json.dump` and `COCO.loadRes`. The images
    and annotations are checked as training checks them (`_ground_truth`).
    """
    coco_gt, _ = _ground_truth(
        annotation_file, image_dir, on_invalid, apply_exif_orientation, progress
    )
    category_ids = sorted(coco_gt.getCatIds())
    model_ids = getattr(model, "category_ids", None)
    if model_ids:
        unknown = sorted(set(int(c) for c in model_ids) - set(category_ids))
        if unknown:
            raise ValueError(
                f"The model's category_ids {unknown[:10]} are not categories of "
                f"'{annotation_file}'. Evaluate on a dataset with the model's "
                "categories, or fine-tune with `num_classes` for this one."
            )
        category_ids = [int(c) for c in model_ids]
    image_ids = sorted(coco_gt.getImgIds())
    if max_images is not None:
        image_ids = image_ids[: int(max_images)]
    batch_size = max(int(batch_size), 1)
    progbar = keras.utils.Progbar(len(image_ids)) if progress else None

    results = []
    for start in range(0, len(image_ids), batch_size):
        chunk = image_ids[start : start + batch_size]
        infos = coco_gt.loadImgs(chunk)
        images = [
            load_image(os.path.join(image_dir, i["file_name"]), apply_exif_orientation)
            for i in infos
        ]
        outputs = _predict(model, images)
        chunk_ids = [chunk] if len(outputs) == 1 else [[i] for i in chunk]
        for ids, output in zip(chunk_ids, outputs, strict=True):
            _check_mask_size(output, [infos[chunk.index(i)] for i in ids])
            results.extend(predictions_to_coco_results(output, ids, category_ids))
        if progbar is not None:
            progbar.add(len(chunk))
    return coco_gt, results, image_ids


def coco_evaluation(
    model,
    annotation_file,
    image_dir,
    batch_size=1,
    max_images=None,
    progress=True,
    apply_exif_orientation=True,
    on_invalid="raise",
):
    """Mask and box AP, per-class AP and PR curves of `model` on a dataset.

    Like `evaluate_model` (same arguments), but evaluates both the masks
    (`"segm"`) and the boxes of the predicted masks (`"bbox"`), and returns
    a dict with:
    - `"segm"`, `"bbox"`: the 12 COCO statistics each;
    - `"per_class"`: a list of `{"category_id", "name", "mask_ap",
      "box_ap", "num_instances"}` dicts, in category-id order;
    - `"pr_curves"`: `{"segm": ..., "bbox": ...}`, precision at the 101
      recall points (see `_pr_curves`);
    - `"results"`: the COCO result dicts, for `json.dump` / `COCO.loadRes`.

    Example:
    >>> report = keras_solov2.evaluation.coco_evaluation(
    ...     model, "annotations.json", "images/")
    >>> report["segm"]["AP"], report["bbox"]["AP"]
    """
    coco_gt, results, image_ids = predict_coco_results(
        model,
        annotation_file,
        image_dir,
        batch_size=batch_size,
        max_images=max_images,
        progress=progress,
        apply_exif_orientation=apply_exif_orientation,
        on_invalid=on_invalid,
    )
    report = {"per_class": [], "pr_curves": {}, "results": results}
    per_class = {}
    for iou_type in ("segm", "bbox"):
        evaluator = _cocoeval(coco_gt, results, iou_type, progress, image_ids)
        report[iou_type] = _stats(evaluator)
        report["pr_curves"][iou_type] = _pr_curves(evaluator)
        per_class[iou_type] = _per_class_ap(evaluator)
    for category in sorted(
        coco_gt.loadCats(coco_gt.getCatIds()), key=lambda c: c["id"]
    ):
        cid = int(category["id"])
        report["per_class"].append(
            {
                "category_id": cid,
                "name": category.get("name", str(cid)),
                "mask_ap": per_class["segm"].get(cid, -1.0),
                "box_ap": per_class["bbox"].get(cid, -1.0),
                "num_instances": len(
                    coco_gt.getAnnIds(imgIds=image_ids, catIds=[cid], iscrowd=False)
                ),
            }
        )
    return report
