"""The image entries and image files of a COCO json, checked.

Each problem comes with a message naming the entry or file and the json, as
`CocoDataset` raises or counts it.
"""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import keras
import tensorflow as tf

from keras_solov2.data.images import ImageError, inspect_image, orientation_note

IMAGE_SKIP_REASONS = ("missing_file", "unreadable_image", "size_mismatch")


def read_categories(categories, annotation_file):
    """The category ids, ascending (label `k` is the `k`-th), and their names."""
    for position, category in enumerate(categories):
        if "id" not in category:
            raise ValueError(
                f"Entry {position} of 'categories' in '{annotation_file}' "
                f"({category}) has no id."
            )
    categories = sorted(categories, key=lambda c: c["id"])
    ids = [int(c["id"]) for c in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Duplicate category ids in '{annotation_file}'.")
    return ids, [str(c.get("name", c["id"])) for c in categories]


def read_image_entries(images, annotation_file, image_dir):
    """One record per `images` entry, and `{image id: record position}`."""
    records = []
    index_of = {}
    for position, image in enumerate(images):
        missing = [k for k in ("id", "file_name", "height", "width") if k not in image]
        if missing:
            raise ValueError(
                f"Entry {position} of 'images' in '{annotation_file}' "
                f"(id {image.get('id')}, file {image.get('file_name')!r}) lacks "
                f"{missing}; COCO image entries need id, file_name, height "
                "and width."
            )
        image_id = int(image["id"])
        if image_id in index_of:
            raise ValueError(f"Duplicate image id {image_id} in '{annotation_file}'.")
        index_of[image_id] = len(records)
        records.append(
            {
                "id": image_id,
                "file_name": image["file_name"],
                "path": os.path.join(image_dir, image["file_name"]),
                "height": int(image["height"]),
                "width": int(image["width"]),
                "orientation": 0,  # 0: not inspected yet
                "instances": [],
            }
        )
    return records, index_of


def image_problem(record, raw, annotation_file, apply_exif_orientation):
    """`None`, or `(reason, message)` for a bad image; sets its orientation."""
    where = f"Image '{record['path']}' (image id {record['id']}) of '{annotation_file}'"
    try:
        info = inspect_image(raw, apply_exif_orientation)
    except ValueError as e:
        return "unreadable_image", f"{where} cannot be decoded: {e}."
    if info["exif_problem"]:
        warnings.warn(
            f"{where}: {info['exif_problem']}; it is used as stored (orientation 1).",
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


def check_image_files(
    records,
    annotation_file,
    apply_exif_orientation,
    check_files,
    check_images,
    progress,
):
    """One `None` or `(reason, message)` per record."""
    if not (check_files or check_images):
        return [None] * len(records)

    def check(record):
        path = record["path"]
        if not tf.io.gfile.exists(path):
            return "missing_file", (
                f"Image file '{record['file_name']}' (image id {record['id']}) "
                f"listed in '{annotation_file}' was not found at '{path}'."
            )
        if not check_images:
            return None
        with tf.io.gfile.GFile(path, "rb") as f:
            return image_problem(
                record, f.read(), annotation_file, apply_exif_orientation
            )

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


def skip_image_files(
    records,
    annotation_file,
    apply_exif_orientation,
    on_invalid,
    check_files,
    check_images,
    progress,
):
    """Raises on a bad image file, or marks its record skipped.

    Returns:
        `({reason: images}, [(image id, file name, reason, detail)])`.
    """
    skipped = []
    counts = {reason: 0 for reason in IMAGE_SKIP_REASONS}
    problems = check_image_files(
        records,
        annotation_file,
        apply_exif_orientation,
        check_files,
        check_images,
        progress,
    )
    for record, problem in zip(records, problems, strict=True):
        if problem is None:
            continue
        reason, detail = problem
        if on_invalid == "raise":
            error = FileNotFoundError if reason == "missing_file" else ImageError
            raise error(
                f"{detail} Fix or remove the image, or pass on_invalid='skip' "
                "to leave such images out and count them."
            )
        record["skipped"] = True
        counts[reason] += 1
        skipped.append((record["id"], record["file_name"], reason, detail))
    return counts, skipped
