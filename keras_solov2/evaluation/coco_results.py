"""COCO result dicts (RLE masks, boxes, scores) from a SOLOv2 model."""

import os

import keras
import numpy as np
from pycocotools import mask as mask_util

from keras_solov2.evaluation.ground_truth import (
    coco_source,
    evaluated_image_ids,
    source_name,
)
from keras_solov2.io import load_image
from keras_solov2.models.solov2.mask_paste import paste_masks


def predict_to_coco(
    model,
    data,
    image_dir=None,
    *,
    image_ids=None,
    batch_size=1,
    max_images=None,
    progress=True,
    apply_exif_orientation=True,
    on_invalid="raise",
):
    """Predicts images with `model` and returns their COCO result dicts.

    Each detection becomes a dict with `"image_id"`, `"category_id"`,
    `"segmentation"` (a compressed RLE whose `counts` is a `str`), `"score"`
    and `"bbox"` (`[x, y, w, h]`), ready for `json.dump` and
    `pycocotools.coco.COCO.loadRes`. Padding (label `-1`, or beyond
    `num_detections`) is left out. Boxes of zero width or height and
    missing boxes are replaced by the box of the mask. Contiguous label `i`
    maps to `model.category_ids[i]` when the model has them (a model
    trained on a `CocoDataset`), else to the dataset's categories in
    ascending id order (is `i` itself for images given as arrays).

    The model gets uint8 RGB images `(B, H, W, 3)` and must return, at each
    image's original size, the dict of `keras_solov2.SOLOv2.predict`
    (`"masks"`, `"labels"`, `"scores"`, optional `"boxes"` and
    `"num_detections"`); `mask_probs` (`mask_resolution="features"`) are
    pasted at the original size. Any object with a
    `predict(images, verbose=0)` method following that contract will do
    (an exported `keras_solov2.export.LiteRTPredictor`, for one).

    Args:
        model: a `keras_solov2.SOLOv2`, or an object with such a `predict`.
        data: what to predict: the path of a COCO instances json (its
            images in `image_dir`, read in ascending image-id order), a
            `keras_solov2.data.CocoDataset`, a `pycocotools.coco.COCO` (its
            images in `image_dir`), or a sequence of `(H, W, 3)` uint8 images.
        image_dir: str. The image folder of a json or `COCO` `data`.
        image_ids: optional sequence of ids of images given as arrays.
            Defaults to `0, 1, 2, ...`.
        batch_size: int. Images per `predict` call; images of different
            sizes in one chunk are predicted one by one. Defaults to `1`.
        max_images: optional int. Predict only the first `max_images`
            images. Defaults to all images.
        progress: bool. Whether to show a `keras.utils.Progbar`. Defaults
            to `True`.
        apply_exif_orientation: bool. See `keras_solov2.io.load_image`.
            Defaults to `True`.
        on_invalid: str. What an invalid annotation or image file of a json
            `data` does: `"raise"` an error that names it, or `"skip"` it and
            count it, as in training (`keras_solov2.data.CocoDataset`).
            Defaults to `"raise"`.

    Returns:
        A list of COCO result dicts.

    Example:
    >>> results = keras_solov2.evaluation.predict_to_coco(
    ...     model, "annotations.json", "images/")
    >>> json.dump(results, open("results.json", "w"))

    Reference: SOLOv2 (https://arxiv.org/abs/2003.10152).
    """
    if _is_images(data):
        images = [np.asarray(image) for image in data][:max_images]
        ids = range(len(images)) if image_ids is None else image_ids
        ids = [int(i) for i in ids][: len(images)]
        if len(ids) != len(images):
            raise ValueError(f"Got {len(ids)} image ids for {len(images)} images.")
        by_id = dict(zip(ids, images, strict=True))
        return predict_images(
            model,
            ids,
            by_id.__getitem__,
            {i: image.shape[:2] for i, image in by_id.items()},
            getattr(model, "category_ids", None),
            batch_size,
            progress,
        )
    _, results, _ = predict_source(
        model,
        data,
        image_dir,
        batch_size=batch_size,
        max_images=max_images,
        progress=progress,
        apply_exif_orientation=apply_exif_orientation,
        on_invalid=on_invalid,
    )
    return results


def _is_images(data):
    if isinstance(data, np.ndarray):
        return True
    return isinstance(data, (list, tuple)) and all(
        isinstance(image, np.ndarray) for image in data
    )


def predict_source(
    model,
    data,
    image_dir=None,
    batch_size=1,
    max_images=None,
    progress=True,
    apply_exif_orientation=True,
    on_invalid="raise",
):
    """`(coco_gt, results, image_ids)` of the ground truth `data` (see
    `ground_truth.coco_source`), for `predict_to_coco` and `evaluate`."""
    coco_gt, image_dir, exif = coco_source(
        data, image_dir, on_invalid, apply_exif_orientation, progress
    )
    if image_dir is None:
        raise ValueError("Give `image_dir`, the folder of the images to predict.")
    image_ids = evaluated_image_ids(coco_gt, max_images)
    infos = {int(info["id"]): info for info in coco_gt.loadImgs(image_ids)}

    def load(image_id):
        name = infos[image_id]["file_name"]
        return load_image(os.path.join(image_dir, name), exif)

    sizes = {i: (info["height"], info["width"]) for i, info in infos.items()}
    category_ids = _category_ids(model, coco_gt, source_name(data))
    results = predict_images(
        model, image_ids, load, sizes, category_ids, batch_size, progress
    )
    return coco_gt, results, image_ids


def _category_ids(model, coco_gt, source):
    """`model.category_ids` if it has them (each a category of `coco_gt`),
    else the categories of `coco_gt` in ascending id order."""
    category_ids = sorted(coco_gt.getCatIds())
    model_ids = getattr(model, "category_ids", None)
    if not model_ids:
        return category_ids
    unknown = sorted(set(int(c) for c in model_ids) - set(category_ids))
    if unknown:
        raise ValueError(
            f"The model's category_ids {unknown[:10]} are not categories of "
            f"{source}. Evaluate on a dataset with the model's "
            "categories, or fine-tune with `num_classes` for this one."
        )
    return [int(c) for c in model_ids]


def predict_images(model, image_ids, load, sizes, category_ids, batch_size, progress):
    """Predicts the images `load(image_id)` in chunks of `batch_size` and
    checks that the masks have the image's `sizes[image_id]`."""
    image_ids = list(image_ids)
    batch_size = max(int(batch_size), 1)
    progbar = keras.utils.Progbar(len(image_ids)) if progress else None
    results = []
    for start in range(0, len(image_ids), batch_size):
        chunk = image_ids[start : start + batch_size]
        outputs = _predict(model, [load(i) for i in chunk])
        chunk_ids = [chunk] if len(outputs) == 1 else [[i] for i in chunk]
        for ids, output in zip(chunk_ids, outputs, strict=True):
            _check_mask_size(output, ids, sizes)
            results.extend(coco_results_of_batch(output, ids, category_ids))
        if progbar is not None:
            progbar.add(len(chunk))
    return results


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


def _to_numpy(x):
    if isinstance(x, (list, tuple)):
        return [_to_numpy(v) for v in x]
    return np.asarray(keras.ops.convert_to_numpy(x))


def _to_numpy_dict(predictions):
    return {key: _to_numpy(value) for key, value in predictions.items()}


def _check_mask_size(predictions, image_ids, sizes):
    masks = predictions["masks"]
    for b, image_id in enumerate(image_ids):
        height, width = (int(v) for v in sizes[image_id])
        size = tuple(np.shape(masks[b])[-2:])
        if size != (height, width):
            raise ValueError(
                f"Image {image_id} is {height}x{width} but the model returned "
                f"masks of size {size[0]}x{size[1]}; masks must be at the "
                "original image size."
            )


def _xyxy_to_xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_results_of_batch(predictions, image_ids, category_ids=None):
    """The COCO result dicts of one batch of predictions (`predict_to_coco`).

    `predictions` holds `"masks"` `(B, D, H, W)` (or a list of `(D, H_b,
    W_b)` arrays), `"labels"` `(B, D)` (`-1` for padding), `"scores"`
    `(B, D)`, optional `"boxes"` `(B, D, 4)` `(x1, y1, x2, y2)` and
    `"num_detections"` `(B,)`; label `i` maps to `category_ids[i]`, or is
    the category id itself when `category_ids` is `None`.
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
    if category_ids is not None:
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
            if category_ids is not None and label >= len(category_ids):
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
                    "category_id": (
                        label if category_ids is None else category_ids[label]
                    ),
                    "segmentation": rle,
                    "score": float(scores[b][d]),
                    "bbox": bbox,
                }
            )
    return results
