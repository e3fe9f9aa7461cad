"""COCO annotations as the readers use them: RLEs, masks, boxes, truncation.

`CocoDataset` (reading the json) and `write_tfrecords` (storing what it
kept) decode the same segmentations with the same functions, so a TFRecord
holds exactly the masks and boxes the COCO reader yields.
"""

import warnings

import numpy as np
from pycocotools import mask as mask_utils

# A bbox whose IoU with its mask's tight box is below this is reported. Real
# COCO annotations go down to 0.70 on small objects (coco_mini); a box in the
# wrong format or for the wrong object falls far below.
BBOX_MIN_IOU = 0.5


def annotation_rle(segmentation, height: int, width: int) -> dict:
    """Merged RLE of a COCO segmentation, exactly as `COCO.annToRLE` builds it.

    Args:
        segmentation: the annotation's `segmentation`: a list of polygons,
            or an RLE dict (compressed `counts` string or uncompressed list).
        height: int. Image height.
        width: int. Image width.

    Raises:
        ValueError: for malformed segmentations (the message says why);
            pycocotools may also raise a bare `Exception`.
    """
    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            if not isinstance(polygon, (list, tuple)) or len(polygon) % 2:
                raise ValueError("polygon with an odd number of coordinates")
            # Fewer than 3 points enclose no area; `frPyObjects` would also
            # misread a 4-number list as a box.
            if len(polygon) >= 6:
                polygons.append([float(v) for v in polygon])
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = [int(v) for v in segmentation.get("size", ())]
        if size != [height, width]:
            raise ValueError(
                f"RLE size {segmentation.get('size')} differs from the image "
                f"size [{height}, {width}]"
            )
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        counts = segmentation["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": size, "counts": counts}
    raise ValueError(f"unsupported segmentation type {type(segmentation).__name__}")


def instance_masks(instances, height: int, width: int) -> np.ndarray:
    """uint8 `(height, width, n)` 0/1 masks of kept instances (`n >= 1`).

    `instances` are `CocoDataset.instances(i)` dicts (validated
    segmentations).
    """
    rles = [annotation_rle(inst["segmentation"], height, width) for inst in instances]
    return mask_utils.decode(rles)


def instance_boxes(instances) -> np.ndarray:
    """float64 `(n, 4)` `[x1, y1, x2, y2]` from the instances' `[x, y, w, h]`."""
    boxes = np.array([inst["bbox"] for inst in instances], np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    return np.stack([x, y, x + w, y + h], axis=1)


def box_iou(a, b) -> float:
    """IoU of two `[x, y, w, h]` boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def warn_truncation(counts, max_instances, source, stacklevel=1):
    """Counts and warns about instances beyond `max_instances`.

    Args:
        counts: instances per image (a sequence), or `{count: images}`.
        max_instances: int, the instance slots per image.
        source: str, named in the warning.
        stacklevel: int, as in `warnings.warn` but counted from the caller.

    Returns:
        `(truncated_images, truncated_instances)`.
    """
    if not isinstance(counts, dict):
        counts = dict(
            zip(
                *np.unique(np.asarray(counts, np.int64), return_counts=True),
                strict=True,
            )
        )
    over = {int(k): int(v) for k, v in counts.items() if int(k) > max_instances}
    images = sum(over.values())
    instances = sum((k - max_instances) * v for k, v in over.items())
    if images:
        warnings.warn(
            f"max_instances={max_instances}: {instances} instance(s) in {images} "
            f"image(s) of '{source}' are dropped from the targets (the first "
            "max_instances per image are kept).",
            stacklevel=stacklevel + 1,
        )
    return images, instances


def annotation_problem(segmentation, bbox, height: int, width: int):
    """`None` for a usable annotation, else `(reason, detail)`.

    The checks of one annotation's geometry, in order: the segmentation
    decodes (`"invalid_segmentation"`), to a non-empty mask
    (`"empty_mask"`); the bbox is `[x, y, w > 0, h > 0]` (`"invalid_bbox"`)
    and overlaps its mask's tight box with IoU >= `BBOX_MIN_IOU`
    (`"bbox_mask_mismatch"`). `detail` says what is wrong.
    """
    try:
        rle = annotation_rle(segmentation, height, width)
    except Exception as e:  # pycocotools raises bare Exceptions.
        return "invalid_segmentation", f"invalid segmentation ({e})"
    if int(mask_utils.area(rle)) == 0:
        return "empty_mask", "the segmentation decodes to an empty mask"
    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not np.all(np.isfinite(bbox))
        or bbox[2] <= 0
        or bbox[3] <= 0
    ):
        return "invalid_bbox", f"invalid bbox {bbox} (need [x, y, w>0, h>0])"
    mask_box = mask_utils.toBbox(rle)
    overlap = box_iou(np.asarray(bbox, np.float64), mask_box)
    if overlap < BBOX_MIN_IOU:
        return "bbox_mask_mismatch", (
            f"bbox {list(bbox)} disagrees with its mask's box "
            f"{[round(float(v), 1) for v in mask_box]} (IoU {overlap:.2f}; both "
            "[x, y, width, height] in pixels; is the bbox in another format?)"
        )
    return None
