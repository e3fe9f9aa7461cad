"""COCO instance segmentation reader producing fixed-shape `tf.data` batches.

`CocoDataset` parses a COCO "instances" json once, validates every annotation
(nothing is dropped silently: crowd annotations are excluded and counted,
invalid ones raise by default or are skipped and counted) and builds a
`tf.data.Dataset` of `(images, targets)` batches with static shapes, following
the mmdetection SOLOv2 training pipeline: keep-ratio resize to a `(long,
short)` scale picked at random, random horizontal flip and padding at the
bottom/right. The images stay raw (RGB, 0..255) and are padded with
`image_geometry.PIXEL_MEAN`: the model normalises them inside its graph, which
turns that padding into mmdetection's zero padding after normalisation.
"""

import atexit
import gc
import json
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf

from keras_solov2.data.annotations import (
    annotation_problem,
    instance_boxes,
    instance_masks,
    warn_truncation,
)
from keras_solov2.data.augmentation import Augmentation
from keras_solov2.data.batching import batch_examples
from keras_solov2.data.images import (
    ImageError,
    apply_orientation,
    decode_rgb,
    inspect_image,
    orientation_note,
)
from keras_solov2.data.transforms import resized_sizes
from keras_solov2.utils import image_geometry

SKIP_REASONS = (
    "unknown_image_id",
    "unknown_category_id",
    "invalid_segmentation",
    "empty_mask",
    "invalid_bbox",
    "bbox_mask_mismatch",
    "image_skipped",
)
IMAGE_SKIP_REASONS = ("missing_file", "unreadable_image", "size_mismatch")


class _InvalidAnnotation(Exception):
    """One annotation `CocoDataset` cannot use: `reason` (of `SKIP_REASONS`)."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@atexit.register
def _release_failed_pipelines():
    """Frees, before Python finalises, what an uncaught error kept alive.

    Python keeps the traceback of an exception that reached the top level
    (`sys.last_traceback`) until it finalises, and with it the frames that
    iterated a pipeline of `as_tf_dataset` and its `tf.data` iterator. That
    iterator's destructor would then run in a finalising interpreter, whose
    threads can no longer take the GIL, and wait forever for the
    `numpy_function` calls in flight: a training script whose data holds a
    truncated JPEG would hang instead of exiting. `atexit` runs while the
    interpreter still works, so the iterator is destroyed there.
    """
    for name in ("last_exc", "last_type", "last_value", "last_traceback"):
        if hasattr(sys, name):
            setattr(sys, name, None)
    gc.collect()


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
        self._read_categories(data.get("categories", []))
        self._records, index_of = self._read_image_entries(data.get("images", []))
        skipped_images = self._check_images(check_files, check_images, progress)
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

    def _read_categories(self, categories):
        """Maps category ids, ascending, to the contiguous labels `0..K-1`."""
        for position, category in enumerate(categories):
            if "id" not in category:
                raise ValueError(
                    f"Entry {position} of 'categories' in '{self.annotation_file}' "
                    f"({category}) has no id."
                )
        categories = sorted(categories, key=lambda c: c["id"])
        ids = [int(c["id"]) for c in categories]
        if len(set(ids)) != len(ids):
            raise ValueError(f"Duplicate category ids in '{self.annotation_file}'.")
        self._category_ids = ids
        self._class_names = [str(c.get("name", c["id"])) for c in categories]
        self._label_of = {cid: label for label, cid in enumerate(ids)}

    def _read_image_entries(self, images):
        """One record per `images` entry, and `{image id: record position}`."""
        records = []
        index_of = {}
        for position, image in enumerate(images):
            missing = [
                k for k in ("id", "file_name", "height", "width") if k not in image
            ]
            if missing:
                raise ValueError(
                    f"Entry {position} of 'images' in '{self.annotation_file}' "
                    f"(id {image.get('id')}, file {image.get('file_name')!r}) lacks "
                    f"{missing}; COCO image entries need id, file_name, height "
                    "and width."
                )
            image_id = int(image["id"])
            if image_id in index_of:
                raise ValueError(
                    f"Duplicate image id {image_id} in '{self.annotation_file}'."
                )
            index_of[image_id] = len(records)
            records.append(
                {
                    "id": image_id,
                    "file_name": image["file_name"],
                    "path": os.path.join(self.image_dir, image["file_name"]),
                    "height": int(image["height"]),
                    "width": int(image["width"]),
                    "orientation": 0,  # 0: not inspected yet
                    "instances": [],
                }
            )
        return records, index_of

    def _check_images(self, check_files, check_images, progress):
        """Raises on a bad image file, or marks it skipped; the skip counts."""
        self.skipped_images = []
        skipped_images = {reason: 0 for reason in IMAGE_SKIP_REASONS}
        problems = self._check_image_files(
            self._records, check_files, check_images, progress
        )
        for record, problem in zip(self._records, problems, strict=True):
            if problem is None:
                continue
            reason, detail = problem
            if self.on_invalid == "raise":
                error = FileNotFoundError if reason == "missing_file" else ImageError
                raise error(
                    f"{detail} Fix or remove the image, or pass on_invalid='skip' "
                    "to leave such images out and count them."
                )
            record["skipped"] = True
            skipped_images[reason] += 1
            self.skipped_images.append(
                (record["id"], record["file_name"], reason, detail)
            )
        return skipped_images

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

    def _image_problem(self, record, raw):
        """`None`, or `(reason, message)` for a bad image; sets orientation."""
        where = (
            f"Image '{record['path']}' (image id {record['id']}) of "
            f"'{self.annotation_file}'"
        )
        try:
            info = inspect_image(raw, self.apply_exif_orientation)
        except ValueError as e:
            return "unreadable_image", f"{where} cannot be decoded: {e}."
        if info["exif_problem"]:
            warnings.warn(
                f"{where}: {info['exif_problem']}; it is used as stored "
                "(orientation 1).",
                stacklevel=2,
            )
        h, w = record["height"], record["width"]
        if (info["height"], info["width"]) != (h, w):
            return "size_mismatch", (
                f"{where} is {info['height']}x{info['width']} (height x width"
                f"{', after EXIF orientation' if info['orientation'] != 1 else ''})"
                f" but the json says {h}x{w}.{orientation_note(info, h, w)}"
            )
        record["orientation"] = info["orientation"]
        return None

    def _check_image_files(self, records, check_files, check_images, progress):
        """One `None` or `(reason, message)` per record."""
        if not (check_files or check_images):
            return [None] * len(records)

        def check(record):
            path = record["path"]
            if not tf.io.gfile.exists(path):
                return "missing_file", (
                    f"Image file '{record['file_name']}' (image id {record['id']}) "
                    f"listed in '{self.annotation_file}' was not found at '{path}'."
                )
            if not check_images:
                return None
            with tf.io.gfile.GFile(path, "rb") as f:
                return self._image_problem(record, f.read())

        if not check_images:
            return [check(r) for r in records]
        bar = keras.utils.Progbar(len(records), unit_name="image") if progress else None
        problems = []
        with ThreadPoolExecutor(8) as pool:
            for k, problem in enumerate(pool.map(check, records)):
                problems.append(problem)
                if bar is not None and (k + 1 == len(records) or k % 64 == 0):
                    bar.update(k + 1)
        return problems

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
        problem = self._image_problem(record, raw)
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

    def _check_sizes_fit(self, augment):
        """Raises, naming the first image that some scale resizes past the canvas.

        The sizes come from `transforms.resized_sizes`, the function the
        pipeline itself uses, for every image and scale at once.
        """
        scales = augment.scales
        heights = np.array([r["height"] for r in self._records], np.int64)
        widths = np.array([r["width"] for r in self._records], np.int64)
        portrait = heights > widths
        if augment.aspect_ratio_grouping:
            groups = [(augment.canvas, ~portrait), (augment.portrait_canvas, portrait)]
        else:
            groups = [(augment.canvas, np.ones_like(portrait))]
        for canvas, group in groups:
            index = np.flatnonzero(group)
            if not len(index):
                continue
            sizes = resized_sizes(heights[index], widths[index], canvas, scales)
            sizes = sizes.numpy()  # (n, S, 2)
            misfit = np.any((sizes > np.array(canvas)) | (sizes < 1), axis=-1)
            if misfit.any():
                k, j = (int(v) for v in np.argwhere(misfit)[0])
                record, scale = self._records[index[k]], (scales or [None])[j]
                raise ValueError(
                    f"Image '{record['file_name']}' ({record['height']}x"
                    f"{record['width']}) resized with scale {scale} becomes "
                    f"{sizes[k, j, 0]}x{sizes[k, j, 1]}, which does not fit "
                    f"the {canvas[0]}x{canvas[1]} canvas. "
                    f"{augment.misfit_advice()}"
                )

    def _load_targets(self, index, size, offset, window, decoded_hw, max_instances):
        """Numpy side of the pipeline: one image's masks, labels and boxes.

        Masks come resized to `size` and cropped to the window (`(n, wh, ww)`
        uint8, pixel-centre nearest neighbour as
        `transforms.nearest_indices`), boxes as float64 `[x1, y1, x2, y2]` in
        original pixels; `transforms.finish_instances` does the rest.
        """
        record = self._records[int(index)]
        h, w = record["height"], record["width"]
        if (int(decoded_hw[0]), int(decoded_hw[1])) != (h, w):
            raise ValueError(
                f"Image '{record['path']}' (image id {record['id']}) decodes to "
                f"{int(decoded_hw[0])}x{int(decoded_hw[1])} but "
                f"'{self.annotation_file}' says {h}x{w}."
            )
        instances = record["instances"][: int(max_instances)]
        n = len(instances)
        wh, ww = int(window[0]), int(window[1])
        labels = np.array([inst["label"] for inst in instances], np.int32)
        if n == 0:
            return np.zeros((0, wh, ww), np.uint8), labels, np.zeros((0, 4))
        rh, rw = int(size[0]), int(size[1])
        rows = (2 * (int(offset[0]) + np.arange(wh, dtype=np.int64)) + 1) * h
        cols = (2 * (int(offset[1]) + np.arange(ww, dtype=np.int64)) + 1) * w
        rows, cols = rows // (2 * rh), cols // (2 * rw)
        full = instance_masks(instances, h, w)  # (h, w, n)
        masks = np.ascontiguousarray(
            full[rows[:, None], cols[None, :], :].transpose(2, 0, 1)
        )
        return masks, labels, instance_boxes(instances)

    def as_tf_dataset(
        self,
        batch_size: int,
        image_size: Sequence[int] | None = None,
        scales: Sequence[int] | Sequence[Sequence[int]] | None = None,
        max_instances: int = 100,
        training: bool = True,
        flip_probability: float = 0.5,
        shuffle: bool | None = None,
        seed: int = 0,
        repeat: bool = False,
        drop_remainder: bool = True,
        cache: bool | str = False,
        large_scale_jitter: Sequence[float] | None = None,
        keep_negatives: bool = True,
        input_context: tf.distribute.InputContext | None = None,
        size_divisor: int = image_geometry.SIZE_DIVISOR,
        mask_targets: str = "compact",
        aspect_ratio_grouping: bool = False,
    ) -> tf.data.Dataset:
        """Fixed-shape `(images, targets)` batches for SOLOv2 training.

        Per image: check the file (see the class docstring), decode
        (grayscale/RGBA/CMYK converted to RGB), apply the EXIF orientation,
        keep-ratio resize
        (bilinear, no antialiasing, rounded to the 0..255 grid as mmcv does on
        uint8 images), random horizontal flip, then pad at the bottom/right
        to the canvas with `image_geometry.PIXEL_MEAN`. The images are not
        normalised: every entry point of `keras_solov2.SOLOv2` takes raw
        0..255 images and normalises them in its graph, which makes this
        padding exactly mmdetection's zero padding after normalisation.
        Masks follow the same geometry (pixel-centre nearest-neighbour
        resize, same flip, zero padding); boxes come from the annotation
        `bbox`, scaled per axis, clipped to the resized image and flipped.

        Batch format (`B = batch_size`, `M = max_instances`, `(H, W)` the
        canvas):

        - `images`: float32 `(B, H, W, 3)`, raw RGB on the 0..255 grid
          (integer values), `PIXEL_MEAN` in the padding.
        - with `mask_targets="compact"` (the default), what SOLOv2's loss
          needs of the masks (`transforms.compact_mask_targets`):
          `targets["mask_targets"]` uint8 `(B, M, H/4, W/4)`, binary, the
          masks at the mask-feature stride; `targets["mask_centers"]` float32
          `(B, M, 2)`, each mask's centre of mass `[y, x]` in canvas pixels;
          `targets["mask_areas"]` int32 `(B, M)`, its area in canvas pixels.
          Zero for padding slots. The model gets the same targets as from
          full masks, bit for bit, from 1/16 of the bytes and without the
          int32 and float32 canvas-sized copies.
        - with `mask_targets="full"`, `targets["masks"]`: uint8 `(B, M, H, W)`,
          binary; zero for padding slots (to look at them or to use them
          elsewhere: `M * H * W` bytes per image, 107 MB at 1344x800 with
          `M = 100`).
        - `targets["labels"]`: int32 `(B, M)`, contiguous labels, `-1` for
          padding slots.
        - `targets["boxes"]`: float32 `(B, M, 4)`, `[x1, y1, x2, y2]` in
          canvas pixels; zero for padding slots.

        Instances keep the json order; beyond `M` only the first `M` are kept
        and the truncation is counted in `stats` (`truncated_images`,
        `truncated_instances`) and reported with a warning. A mask can become
        empty after a strong down-scale (a tiny object); it is kept with its
        label and box, so target assignment must skip empty masks (as mmdet's
        SOLOv2 head does).

        Args:
            batch_size: int. Images per batch.
            image_size: tuple of two ints, or `None`. Canvas `(H, W)`; both
                multiples of `size_divisor`. `None` (with `scales`): the
                smallest square that every scale fits in both orientations,
                `image_geometry.canvas_for_scales(scales, size_divisor)`
                (e.g. 768x768 for `[(768, 512), (768, 448)]`). Required
                without `scales`. Defaults to `None`.
            scales: `None`, one `(long, short)` pair or a list of pairs, as
                mmdet's `img_scale`. When training, each image draws one
                pair at random; otherwise the first is used. `None` resizes
                every image to fit the canvas. Defaults to `None`.
            max_instances: int. `M`, instance slots per image. Defaults to
                `100`.
            training: bool. Random scale and flip. Defaults to `True`.
            flip_probability: float. Horizontal flip probability when
                training. Defaults to `0.5`.
            shuffle: bool or `None`. Shuffle the images (reshuffled every
                iteration). `None` means `training`. Defaults to `None`.
            seed: int. Seed of the shuffle, scale and flip draws; the same
                seed gives the same batches. Defaults to `0`.
            repeat: bool. Repeat forever. Defaults to `False`.
            drop_remainder: bool. Drop the last incomplete batch so the batch
                dimension is static. Defaults to `True`.
            cache: bool or str. Keep the encoded image files after the first
                pass: `True` in memory (about the size of the image folder),
                a path on local disk otherwise. Augmentation still changes
                every epoch. Defaults to `False`.
            large_scale_jitter: `(low, high)` or `None`. Instead of `scales`:
                when training, resize each image to fit the canvas times a
                factor drawn uniformly from `[low, high]` (e.g. `(0.1, 2.0)`
                as in Simple Copy-Paste), then take a random canvas-sized
                window when it is larger. Instances cropped away keep their
                slot with an empty mask. Without training: fit the canvas.
                Defaults to `None`.
            keep_negatives: bool. Include the images without (kept)
                instances as negatives. `False` leaves them out, like
                mmdetection's `filter_empty_gt=True`; their number is in
                `stats["negatives_left_out"]`. Defaults to `True`.
            input_context: `tf.distribute.InputContext` or `None`. For
                `strategy.distribute_datasets_from_function`: this input
                pipeline reads only its share of the images (every
                `num_input_pipelines`-th, from `input_pipeline_id`), so
                workers never read the same image in an epoch.
                `batch_size` is then the per-replica batch size
                (`input_context.get_per_replica_batch_size(global_batch)`).
                Defaults to `None`.
            size_divisor: int. The model's padding multiple: pass
                `model.size_divisor`. The canvas must be a multiple of it.
                Defaults to `image_geometry.SIZE_DIVISOR` (`32`).
            mask_targets: `"compact"` or `"full"`: the masks' form in the
                targets, see above. Defaults to `"compact"`.
            aspect_ratio_grouping: bool. Two canvases instead of one, as
                mmdetection's `AspectRatioBatchSampler` groups images: a
                landscape canvas `(H, W)` with `H <= W` (`image_size` sorted,
                or by default `image_geometry.landscape_canvas_for_scales`,
                e.g. 800x1344 for the `(1333, 800)` scales instead of the
                1344x1344 square) for images no taller than wide, and its
                transpose for portrait images; every batch holds one
                orientation. Far less padding (1.7x fewer canvas pixels at
                the default scales), at the price of batch height and width
                that are not static: Keras traces the training step with
                `None` there, XLA and JAX compile once per canvas. With
                `input_context`, each input pipeline groups its own share,
                so replicas may train different canvases in one step.
                Defaults to `False` (one static canvas).

        Returns:
            A `tf.data.Dataset` of `(images, targets)`.

        Raises:
            ValueError: for a bad argument (naming it), `image_size=None`
                without `scales`, or an image that some scale resizes past
                an explicit canvas (naming the image and the square canvas
                that would fit).
        """
        augment = Augmentation.from_args(
            image_size,
            batch_size,
            max_instances,
            flip_probability,
            scales,
            large_scale_jitter,
            training,
            size_divisor,
            mask_targets,
            aspect_ratio_grouping,
        )
        selected = [
            i for i, r in enumerate(self._records) if keep_negatives or r["instances"]
        ]
        self.stats["negatives_left_out"] = len(self._records) - len(selected)
        num_images = len(selected)
        if num_images == 0:
            raise ValueError(
                f"'{self.annotation_file}' has no images"
                f"{'' if keep_negatives else ' with instances'}."
            )
        if drop_remainder and not repeat and num_images < batch_size:
            raise ValueError(
                f"{num_images} images < batch_size {batch_size} with "
                "drop_remainder=True would give no batch."
            )
        shuffle = training if shuffle is None else shuffle
        if augment.jitter is None:  # raises naming a misfit image
            self._check_sizes_fit(augment)

        counts = [len(r["instances"]) for r in self._records]
        truncated_images, truncated_instances = warn_truncation(
            counts, max_instances, self.annotation_file, stacklevel=2
        )
        self.stats.update(
            max_instances=int(max_instances),
            truncated_images=truncated_images,
            truncated_instances=truncated_instances,
        )

        m = int(max_instances)
        paths = tf.constant([r["path"] for r in self._records])
        original_hw = tf.constant(
            [[r["height"], r["width"]] for r in self._records], tf.int32
        )

        def load(element, random_seed):
            index, raw = element
            h, w = original_hw[index][0], original_hw[index][1]
            geometry = augment.draw(h, w, random_seed, index)
            orientation = tf.numpy_function(
                self._inspect, [raw, index], tf.int32, stateful=False
            )
            with tf.control_dependencies([orientation]):
                # Decode only checked bytes: TF's decode errors name no file.
                raw = tf.identity(raw)
            image = apply_orientation(decode_rgb(raw), orientation)
            masks, labels, boxes = tf.numpy_function(
                self._load_targets,
                [
                    index,
                    geometry["size"],
                    geometry["offset"],
                    geometry["window"],
                    tf.shape(image)[:2],
                    m,
                ],
                [tf.uint8, tf.int32, tf.float64],
                stateful=False,
            )
            image = augment.image(image, geometry)
            labels = tf.reshape(labels, [-1])
            boxes = tf.reshape(boxes, [-1, 4])
            return image, augment.instances(masks, labels, boxes, (h, w), geometry)

        if input_context is not None:
            selected = selected[
                input_context.input_pipeline_id :: input_context.num_input_pipelines
            ]
            num_images = len(selected)
        files = tf.data.Dataset.from_tensor_slices(np.array(selected, np.int64)).map(
            lambda i: (i, tf.io.read_file(paths[i])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if cache:
            files = files.cache("" if cache is True else str(cache))
        if shuffle:
            files = files.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
        return batch_examples(
            files,
            load,
            batch_size,
            seed,
            repeat,
            drop_remainder,
            augment.aspect_ratio_grouping,
        )


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
