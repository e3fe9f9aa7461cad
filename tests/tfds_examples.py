"""Small tfds-style datasets the `from_tfds` tests share."""

import numpy as np
import tensorflow as tf
from image_reference import fit_size

CANVAS = (64, 64)


# (h, w, [(label, y1, x1, y2, x2) inclusive-exclusive rectangles])
EXAMPLES = [
    (40, 60, [(1, 2, 3, 10, 20), (3, 20, 30, 39, 59), (2, 0, 0, 0, 0)]),
    (50, 30, [(2, 5, 5, 45, 25)]),
    (33, 47, []),
]


def example(k, h, w, rects):
    rng = np.random.default_rng(k)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((len(rects), h, w, 1), np.uint8)
    for i, (_, y1, x1, y2, x2) in enumerate(rects):
        masks[i, y1:y2, x1:x2] = 1  # the third of example 0 stays empty
    labels = np.array([r[0] for r in rects], np.int64)
    boxes = np.array(
        [[y1 / h, x1 / w, y2 / h, x2 / w] for _, y1, x1, y2, x2 in rects], np.float32
    ).reshape(-1, 4)
    ids = np.zeros((h, w), np.int32)
    for i in range(len(rects)):
        ids[masks[i, :, :, 0] > 0] = i + 1
    return {
        "image": image,
        "objects": {"mask": masks, "label": labels, "bbox": boxes},
        "panoptic": ids,
    }


def raw_dataset():
    examples = [example(k, *e) for k, e in enumerate(EXAMPLES)]
    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "objects": {
            "mask": tf.TensorSpec([None, None, None, 1], tf.uint8),
            "label": tf.TensorSpec([None], tf.int64),
            "bbox": tf.TensorSpec([None, 4], tf.float32),
        },
        "panoptic": tf.TensorSpec([None, None], tf.int32),
    }
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=signature
    ), examples


def fit_to_canvas(h, w):
    return fit_size(h, w, CANVAS)


def dataset_of(examples, signature):
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=signature
    )


def rect_masks(h, w, rects):
    masks = np.zeros((len(rects), h, w, 1), np.uint8)
    for i, (y1, x1, y2, x2) in enumerate(rects):
        masks[i, y1:y2, x1:x2] = 1
    return masks
