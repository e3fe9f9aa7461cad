"""An independent reference for COCO reader batches (`tests/test_coco_*.py`).

Images with PIL decoding and a numpy bilinear resize, masks with
pycocotools' own `COCO.annToMask` and an exact (fractions) nearest-neighbour
resize, boxes from the json `bbox`.
"""

import math
from fractions import Fraction

import numpy as np
from image_reference import (
    assert_mean_padding,
    bilinear,
    keep_ratio_size,
    mmdet_normalized,
    valid_extent,
)

from keras_solov2.utils import image_geometry

LEVEL = 1.0  # one step of the 0..255 grid


def nearest(mask, out_h, out_w):
    """Pixel-centre nearest neighbour with exact rational arithmetic."""
    h, w = mask.shape
    rows = [math.floor((i + Fraction(1, 2)) * h / out_h) for i in range(out_h)]
    cols = [math.floor((j + Fraction(1, 2)) * w / out_w) for j in range(out_w)]
    return mask[np.ix_(rows, cols)]


def identify(image, coco, pil_images, scales):
    """Which (image id, scale, flip) produced this raw canvas."""
    rh, rw = valid_extent(image)
    best = None
    for image_id, pixels in pil_images.items():
        h, w = pixels.shape[:2]
        for s, scale in enumerate(scales):
            if keep_ratio_size(h, w, scale) != (rh, rw):
                continue
            expected = bilinear(pixels, rh, rw)
            for flip in (False, True):
                ref = expected[:, ::-1] if flip else expected
                err = np.abs(image[:rh, :rw] - ref).max()
                if best is None or err < best[0]:
                    best = (err, image_id, s, flip)
    assert best is not None, f"no image resizes to {rh}x{rw}"
    err, image_id, s, flip = best
    assert err <= LEVEL * 1.01, f"image {image_id} differs by {err / LEVEL} levels"
    return image_id, s, flip, (rh, rw)


def expected_targets(coco, image_id, size, flip, canvas, m):
    rh, rw = size
    info = coco.imgs[image_id]
    h, w = info["height"], info["width"]
    cat_ids = sorted(coco.cats)
    anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]][:m]
    masks = np.zeros((m,) + canvas, np.uint8)
    labels = np.full((m,), -1, np.int32)
    boxes = np.zeros((m, 4), np.float32)
    for k, ann in enumerate(anns):
        resized = nearest(coco.annToMask(ann), rh, rw)
        masks[k, :rh, :rw] = resized[:, ::-1] if flip else resized
        labels[k] = cat_ids.index(ann["category_id"])
        x, y, bw, bh = ann["bbox"]
        x1, x2 = x * rw / w, (x + bw) * rw / w
        y1, y2 = y * rh / h, (y + bh) * rh / h
        x1, x2, y1, y2 = (
            min(max(x1, 0), rw),
            min(max(x2, 0), rw),
            min(max(y1, 0), rh),
            min(max(y2, 0), rh),
        )
        if flip:
            x1, x2 = rw - x2, rw - x1
        boxes[k] = [x1, y1, x2, y2]
    return masks, labels, boxes, len(anns)


def check_batch(images, targets, coco, pil_images, scales, canvas, m):
    seen = []
    for b in range(images.shape[0]):
        image_id, s, flip, size = identify(images[b], coco, pil_images, scales)
        masks, labels, boxes, n = expected_targets(
            coco, image_id, size, flip, canvas, m
        )
        np.testing.assert_array_equal(targets["labels"][b], labels)
        np.testing.assert_array_equal(targets["masks"][b], masks)
        np.testing.assert_allclose(targets["boxes"][b], boxes, atol=1e-3)
        # Boxes enclose their (transformed) masks.
        for k in range(n):
            ys, xs = np.nonzero(masks[k])
            if len(xs):
                x1, y1, x2, y2 = boxes[k]
                assert xs.min() >= math.floor(x1) - 1 and xs.max() < x2 + 1
                assert ys.min() >= math.floor(y1) - 1 and ys.max() < y2 + 1
        # Raw 0..255 integers, padded with the mean; normalising gives
        # mmdetection's input exactly (zero padding after normalisation).
        valid = images[b, : size[0], : size[1]]
        assert valid.min() >= 0 and valid.max() <= 255
        np.testing.assert_array_equal(valid, np.round(valid))
        assert_mean_padding(images[b], *size)
        np.testing.assert_array_equal(
            image_geometry.normalize(images[b]), mmdet_normalized(images[b], *size)
        )
        seen.append((image_id, s, flip))
    return seen
