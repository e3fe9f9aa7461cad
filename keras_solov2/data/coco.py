"""COCO instance segmentation data: a json and its image folder, checked.

`CocoDataset` parses a COCO "instances" json once and validates every
annotation (nothing is dropped silently: crowd annotations are excluded and
counted, invalid ones raise by default or are skipped and counted).
`as_tf_dataset` feeds its images through the pipeline of every source
(`keras_solov2.data.reader`), after `decoders.coco_json`.
"""

import json
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_solov2.data.annotations import annotation_problem
from keras_solov2.data.coco_files import (
    image_problem,
    read_categories,
    read_image_entries,
    skip_image_files,
)
from keras_solov2.data.decoders.coco_json import CocoJsonDecoder
from keras_solov2.data.images import ImageError
from keras_solov2.data.options import PipelineOptions
from keras_solov2.data.reader import build_dataset

SKIP_REASONS = (
    "unknown_image_id",
    "unknown_category_id",
    "invalid_segmentation",
    "empty_mask",
    "invalid_bbox",
    "bbox_mask_mismatch",
    "image_skipped",
)


class _InvalidAnnotation(Exception):
    """One annotation `CocoDataset` cannot use: `reason` (of `SKIP_REASONS`)."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _first(items, count=5):
    """The first `count` of `items`, joined, and how many more there are."""
    items = list(items)
    more = f" and {len(items) - count} more" if len(items) > count else ""
    return ", ".join(items[:count]) + more


# -----------------------------------------------------------------------------


class CocoDataset:
    """A COCO instances file plus its image folder, as SOLOv2 training data.

    Category ids (possibly sparse, e.g. COCO's 1..90) are mapped to contiguous
    labels `0..K-1` in ascending category-id order. Images without (kept)
    annotations are kept as negatives. Crowd annotations (`iscrowd=1`) are
    excluded from the targets and counted in `stats["crowd"]`.

    Invalid annotations (unknown image or category id, malformed
    segmentation, empty mask, missing or non-positive bbox, bbox far from
    its mask) raise a `ValueError` naming the annotation id, image file and
    json file when `on_invalid="raise"`, or are skipped and counted in
    `stats["skipped"]` (with their ids in `skipped_annotations`) when
    `on_invalid="skip"`.

    Image files: a missing file, a file that is not an image or is truncated
    (`keras_solov2.data.images.inspect_image`), or one whose size disagrees
    with the json raises an error naming the file. With `check_images` these
    are found at construction (one pass over the files with a progress
    bar); with `on_invalid="skip"` such images are then left out, counted in
    `stats["skipped_images"]` (listed in `skipped_images`), and their
    non-crowd annotations are counted as skipped with reason
    `"image_skipped"`. Without `check_images`, each image is checked when it
    is read and a bad one stops the iteration with an error naming it.

    EXIF orientation: JPEGs are turned as their EXIF orientation tag says
    (as OpenCV, PIL's `exif_transpose`, browsers and annotation tools show
    them), so the json's `height`/`width` and the annotations refer to the
    displayed image. Pass `apply_exif_orientation=False` for datasets
    annotated on the stored pixels. A size mismatch that the tag would
    explain says so in its error.

    Args:
        annotation_file: str. Path of the COCO instances json.
        image_dir: str. Folder the images' `file_name`s are relative to.
        on_invalid: str. `"raise"` or `"skip"`. Defaults to `"raise"`.
        check_files: bool. Check at construction that every image file
            exists (cheap). Defaults to `True`.
        check_images: bool or `None`. Read every image file at construction
            and check it (format, truncation, size after EXIF orientation;
            nothing is decoded). `None` means `on_invalid == "skip"`.
        apply_exif_orientation: bool. Defaults to `True`.
        progress: bool. Progress bar while checking images. Defaults to
            `True`.

    Example:
    >>> data = CocoDataset("annotations/instances_val2017.json", "val2017")
    >>> ds = data.as_tf_dataset(batch_size=2, scales=[(512, 352), (512, 320)])
    >>> images, targets = next(iter(ds))
    """

    def __init__(
        self,
        annotation_file: str,
        image_dir: str,
        on_invalid: str = "raise",
        check_files: bool = True,
        check_images: bool | None = None,
        apply_exif_orientation: bool = True,
        progress: bool = True,
    ):
        if on_invalid not in ("raise", "skip"):
            raise ValueError(
                f"`on_invalid` must be 'raise' or 'skip', got {on_invalid!r}."
            )
        self.annotation_file = str(annotation_file)
        self.image_dir = str(image_dir)
        self.on_invalid = on_invalid
        self.apply_exif_orientation = bool(apply_exif_orientation)
        if check_images is None:
            check_images = on_invalid == "skip"
        with tf.io.gfile.GFile(self.annotation_file) as f:
            data = json.load(f)
        self._category_ids, self._class_names = read_categories(
            data.get("categories", []), self.annotation_file
        )
        self._label_of = {cid: k for k, cid in enumerate(self._category_ids)}
        self._records, index_of = read_image_entries(
            data.get("images", []), self.annotation_file, self.image_dir
        )
        skipped_images, self.skipped_images = skip_image_files(
            self._records,
            self.annotation_file,
            self.apply_exif_orientation,
            on_invalid,
            check_files,
            check_images,
            progress,
        )
        annotations = data.get("annotations", [])
        self.stats = {
            "images": 0,
            "skipped_images": skipped_images,
            "annotations": len(annotations),
            "instances": 0,
            "crowd": 0,
            "skipped": {reason: 0 for reason in SKIP_REASONS},
            "images_without_instances": 0,
            "negatives_left_out": 0,
            "max_instances": None,
            "truncated_images": 0,
            "truncated_instances": 0,
        }
        self._read_annotations(annotations, index_of)
        self._finish()

    def _read_annotations(self, annotations, index_of):
        """Keeps each valid annotation as an instance of its image record.

        Crowd annotations are counted; an invalid one raises or is skipped
        and counted (`on_invalid`).
        """
        self.skipped_annotations = []
        for ann in annotations:
            index = index_of.get(ann.get("image_id"))
            record = None if index is None else self._records[index]
            try:
                instance = self._instance(ann, record)
            except _InvalidAnnotation as invalid:
                self._report_invalid(ann, record, invalid)
                continue
            if instance is None:
                self.stats["crowd"] += 1
            else:
                record["instances"].append(instance)
                self.stats["instances"] += 1

    def _instance(self, ann, record):
        """The kept instance of `ann`, or `None` for a crowd annotation.

        Raises:
            _InvalidAnnotation: with its reason and what is wrong.
        """
        if record is None:
            image_id = ann.get("image_id")
            raise _InvalidAnnotation("unknown_image_id", f"unknown image_id {image_id}")
        category_id = ann.get("category_id")
        if category_id not in self._label_of:
            raise _InvalidAnnotation(
                "unknown_category_id",
                f"unknown category_id {category_id} (known ids: "
                f"{self._category_ids[:5]}...{self._category_ids[-3:]})",
            )
        if ann.get("iscrowd", 0):
            return None
        if record.get("skipped"):
            raise _InvalidAnnotation(
                "image_skipped", f"its image was skipped ({record['file_name']})"
            )
        bbox = ann.get("bbox")
        problem = annotation_problem(
            ann.get("segmentation"), bbox, record["height"], record["width"]
        )
        if problem is not None:
            raise _InvalidAnnotation(*problem)
        return {
            "id": ann.get("id"),
            "label": self._label_of[category_id],
            "bbox": [float(v) for v in bbox],
            "segmentation": ann["segmentation"],
        }

    def _report_invalid(self, ann, record, invalid):
        """Raises (`on_invalid="raise"`) or counts a skipped annotation."""
        ann_id = ann.get("id")
        if self.on_invalid == "raise":
            file_name = "?" if record is None else record["file_name"]
            raise ValueError(
                f"Annotation id {ann_id} (image id {ann.get('image_id')}, file "
                f"'{file_name}') in '{self.annotation_file}': {invalid.detail}. "
                "Fix the annotation or pass on_invalid='skip' to skip and count "
                "such annotations."
            )
        self.stats["skipped"][invalid.reason] += 1
        self.skipped_annotations.append((ann_id, invalid.reason, invalid.detail))

    def _finish(self):
        """Drops the skipped images, counts the rest, warns about skips."""
        stats = self.stats
        self._records = [r for r in self._records if not r.get("skipped")]
        stats["images"] = len(self._records)
        stats["images_without_instances"] = sum(
            1 for r in self._records if not r["instances"]
        )
        if self.skipped_images:
            skipped_images = {k: v for k, v in stats["skipped_images"].items() if v}
            files = _first(
                f"{name} ({reason})" for _, name, reason, _ in self.skipped_images
            )
            warnings.warn(
                f"{len(self.skipped_images)} image(s) of '{self.annotation_file}' "
                f"were skipped: {skipped_images}: {files}. "
                "They are listed in `CocoDataset.skipped_images`.",
                stacklevel=3,
            )
        skipped = sum(stats["skipped"].values())
        if skipped:
            ids = _first(f"{i} ({reason})" for i, reason, _ in self.skipped_annotations)
            warnings.warn(
                f"{skipped} annotation(s) in '{self.annotation_file}' were "
                f"skipped: { {k: v for k, v in stats['skipped'].items() if v} }: "
                f"ids {ids}. They are in `CocoDataset.skipped_annotations`.",
                stacklevel=3,
            )

    def image_orientation(self, index: int, raw: bytes | None = None) -> int:
        """Checks image `index` and returns its EXIF orientation (1..8).

        Args:
            index: int. Position of the image in the dataset.
            raw: bytes or `None`. The file's bytes, if already read.

        Raises:
            ImageError: naming the file, if it is unreadable, truncated or
                not the size the json says.
        """
        if raw is None:
            with tf.io.gfile.GFile(self._records[index]["path"], "rb") as f:
                raw = f.read()
        return int(self._inspect(raw, index))

    def _inspect(self, raw, index):
        """In-graph check of one image's bytes (numpy side): its orientation."""
        record = self._records[int(index)]
        if record["orientation"]:
            return np.int32(record["orientation"])
        problem = image_problem(
            record, raw, self.annotation_file, self.apply_exif_orientation
        )
        if problem is not None:
            reason, message = problem
            raise ImageError(
                f"{message} Fix or remove the image, or construct the dataset "
                "with on_invalid='skip' (which checks every image first) to "
                "leave such images out and count them."
            )
        return np.int32(record["orientation"])

    @property
    def class_names(self) -> list:
        """Category names; index = contiguous label."""
        return list(self._class_names)

    @property
    def category_ids(self) -> list:
        """COCO category ids; index = contiguous label."""
        return list(self._category_ids)

    @property
    def num_classes(self) -> int:
        return len(self._category_ids)

    @property
    def num_images(self) -> int:
        return len(self._records)

    @property
    def image_ids(self) -> list:
        """COCO image ids in dataset order (the order of the json)."""
        return [r["id"] for r in self._records]

    def __len__(self) -> int:
        return self.num_images

    def label_of(self, category_id: int) -> int:
        """Contiguous label of a COCO category id."""
        return self._label_of[category_id]

    def instances(self, index: int) -> list:
        """Kept (non-crowd, valid) annotations of image `index`, json order.

        Each is a dict with `id`, `label`, `bbox` (`[x, y, w, h]`) and
        `segmentation` (as in the json).
        """
        return list(self._records[index]["instances"])

    def image_record(self, index: int) -> dict:
        """`id`, `file_name`, `path`, `height` and `width` of image `index`."""
        record = self._records[index]
        return {k: record[k] for k in ("id", "file_name", "path", "height", "width")}

    def as_tf_dataset(
        self,
        batch_size: int = 2,
        canvas: Sequence[int] | None = None,
        scales: Sequence[int] | Sequence[Sequence[int]] | None = None,
        **options,
    ) -> tf.data.Dataset:
        """Fixed-shape `(images, targets)` batches for SOLOv2 training.

        Per image: check the file (see the class docstring), decode
        (grayscale/RGBA/CMYK converted to RGB), apply the EXIF orientation,
        then the pipeline of every source (`reader.build_dataset`, which
        describes the batches). Instances keep the json order; the
        truncation beyond `max_instances` is counted in `stats`
        (`truncated_images`, `truncated_instances`) and warned about, and
        the images left out by `keep_negatives=False` in
        `stats["negatives_left_out"]`. Without shuffling the images come in
        the json order.

        Args:
            batch_size: int. Defaults to `2`.
            canvas: `(H, W)` or `None`. Defaults to `None`.
            scales: `(long, short)` pair(s) or `None`. Defaults to `None`.
            **options: the other options. All of them are documented once,
                in `keras_solov2.data.PipelineOptions`. Shuffling takes
                every image at once (a full permutation).

        Returns:
            A `tf.data.Dataset` of `(images, targets)` (or `(images,
            targets, counts)` with `return_counts=True`).

        Raises:
            ValueError: for a bad option (naming it), `canvas=None` without
                `scales`, no image to read, or an image that some scale
                resizes past an explicit canvas (naming the image and the
                square canvas that would fit).
        """
        options = PipelineOptions.from_kwargs(
            batch_size=batch_size, canvas=canvas, scales=scales, **options
        )
        return build_dataset(CocoJsonDecoder(self), options)


def load_coco(annotation_file: str, image_dir: str, **kwargs) -> CocoDataset:
    """Parse a COCO instances json; the same as `CocoDataset(...)`.

    Args:
        annotation_file: str. Path of the COCO instances json.
        image_dir: str. Folder the images' `file_name`s are relative to.
        **kwargs: `on_invalid`, `check_files`, `check_images`,
            `apply_exif_orientation`, `progress`; see `CocoDataset`.

    Returns:
        A `CocoDataset`.
    """
    return CocoDataset(annotation_file, image_dir, **kwargs)
