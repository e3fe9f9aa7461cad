"""The COCO ground truth that evaluation reads, checked as training checks it."""

import contextlib
import io
import os

from pycocotools.coco import COCO

from keras_solov2.data import CocoDataset
from keras_solov2.io import check_coco_paths


def coco_source(
    data, image_dir=None, on_invalid="raise", apply_exif_orientation=True, progress=True
):
    """`(coco_gt, image_dir, apply_exif_orientation)` of the `data` that
    `evaluate` and `predict_to_coco` take.

    `data` is one of:
    - the path of a COCO instances json, with `image_dir`: the annotations
      and image files go through `keras_solov2.data.CocoDataset` with the
      same `on_invalid` as training: an unknown image or category id, a
      malformed segmentation, an empty mask, a bad bbox, or a missing or
      unreadable image raises an error that names it (`"raise"`), or is
      left out of the ground truth and counted (`"skip"`) instead of being
      dropped without a word by pycocotools. Crowd annotations stay
      (pycocotools ignores the detections that fall on them);
    - the same path without `image_dir` (results to evaluate need no image):
      the json as pycocotools reads it;
    - a `CocoDataset`: its annotations less what it skipped, its image
      folder and its `apply_exif_orientation` (its own `on_invalid` applied);
    - a `pycocotools.coco.COCO`: as it is, its images in `image_dir`.
    """
    if isinstance(data, CocoDataset):
        return _kept(data), data.image_dir, data.apply_exif_orientation
    if isinstance(data, COCO):
        return data, image_dir, apply_exif_orientation
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(
            "`data` must be the path of a COCO instances json (with "
            "`image_dir`), a `keras_solov2.data.CocoDataset` or a "
            f"`pycocotools.coco.COCO`, got {type(data).__name__}."
        )
    data = os.fspath(data)
    if image_dir is None:
        if not os.path.isfile(data):
            raise FileNotFoundError(f"The annotation file {data!r} does not exist.")
        return _read(data), None, apply_exif_orientation
    check_coco_paths(data, image_dir)
    dataset = CocoDataset(
        data,
        image_dir,
        on_invalid=on_invalid,
        apply_exif_orientation=apply_exif_orientation,
        progress=progress,
    )
    return _kept(dataset), os.fspath(image_dir), apply_exif_orientation


def source_name(data):
    """What error messages call the ground truth `data`."""
    if isinstance(data, CocoDataset):
        return f"'{data.annotation_file}'"
    if isinstance(data, (str, os.PathLike)):
        return f"'{os.fspath(data)}'"
    return "the ground truth"


def _read(annotation_file):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(annotation_file)


def _indexed(dataset):
    """A `COCO` holding the `dataset` dict (images, annotations, categories)."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _kept(dataset):
    """The json of a `CocoDataset` less the images and annotations it skipped."""
    coco_gt = _read(dataset.annotation_file)
    if not (dataset.skipped_annotations or dataset.skipped_images):
        return coco_gt
    kept_images = set(dataset.image_ids)
    skipped = {ann_id for ann_id, _, _ in dataset.skipped_annotations}
    data = dict(coco_gt.dataset)
    data["images"] = [i for i in data.get("images", []) if i["id"] in kept_images]
    data["annotations"] = [
        a
        for a in data.get("annotations", [])
        if a.get("id") not in skipped and a.get("image_id") in kept_images
    ]
    return _indexed(data)


def empty_results(coco_gt):
    """A `COCO` object with the ground truth's images and no detection."""
    return _indexed(
        {
            "images": list(coco_gt.dataset.get("images", [])),
            "categories": list(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
    )


def evaluated_image_ids(coco_gt, max_images=None):
    """The ground truth's image ids in ascending order, the first
    `max_images` of them when given."""
    image_ids = sorted(coco_gt.getImgIds())
    return image_ids if max_images is None else image_ids[: int(max_images)]
