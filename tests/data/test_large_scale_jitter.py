"""Large-scale jitter: image, masks and boxes keep one geometry.

The data are solid-coloured rectangles on black PNGs, so the masks can be
checked against the image itself: inside a mask (away from its edge) the
pixels have the rectangle's colour, and that colour appears nowhere far from
the mask. The draws themselves are not re-derived here.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from image_reference import MEAN, assert_mean_padding
from PIL import Image
from pycocotools import mask as mask_utils

from keras_solov2.data import CocoDataset, from_tfds, read_tfrecords, write_tfrecords

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)

CANVAS = (128, 128)
JITTER = (0.25, 2.0)
# (x0, y0, x1, y1) pixel edges and colour; images are 96x128 and 128x80.
RECTS = {
    (96, 128): [
        ((8, 10, 40, 50), (250, 30, 30)),
        ((60, 20, 120, 44), (30, 250, 30)),
        ((20, 62, 100, 90), (30, 30, 250)),
    ],
    (128, 80): [
        ((4, 4, 40, 60), (250, 250, 30)),
        ((44, 70, 76, 124), (250, 30, 250)),
    ],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsj")
    images, annotations = [], []
    for k, ((h, w), rects) in enumerate(RECTS.items(), start=1):
        pixels = np.zeros((h, w, 3), np.uint8)
        for n, ((x0, y0, x1, y1), colour) in enumerate(rects):
            pixels[y0:y1, x0:x1] = colour
            annotations.append(
                {
                    "id": 10 * k + n,
                    "image_id": k,
                    "category_id": n + 1,
                    "iscrowd": 0,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                    "area": float((x1 - x0) * (y1 - y0)),
                }
            )
        Image.fromarray(pixels).save(root / f"{k}.png")
        images.append({"id": k, "file_name": f"{k}.png", "height": h, "width": w})
    categories = [{"id": n + 1, "name": f"c{n}"} for n in range(3)]
    ann = root / "ann.json"
    ann.write_text(
        json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}
        )
    )
    return CocoDataset(str(ann), str(root))


def _grow(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _shrink(mask, r):
    return ~_grow(~mask, r)


def _check_batch(images, targets, stats):
    for b in range(images.shape[0]):
        pixels = images[b]
        labels = targets["labels"][b]
        h_img = [hw for hw in RECTS if len(RECTS[hw]) == (labels >= 0).sum()][0]
        # Raw integer pixels; the padding is the (non-integer) mean.
        extent = np.argwhere(np.any(pixels != np.float32(MEAN), axis=-1))
        rh, rw = extent.max(axis=0) + 1
        np.testing.assert_array_equal(pixels[:rh, :rw], np.round(pixels[:rh, :rw]))
        assert_mean_padding(pixels, rh, rw)
        stats.append((rh, rw))
        for slot in np.nonzero(labels >= 0)[0]:
            colour = np.array(RECTS[h_img][labels[slot]][1])
            mask = targets["masks"][b, slot].astype(bool)
            has_colour = np.all(np.abs(pixels - colour) <= 1, axis=-1)
            assert has_colour[_shrink(mask, 2)].all(), "mask pixel off its colour"
            assert not has_colour[~_grow(mask, 2)].any(), "colour outside its mask"
            box = targets["boxes"][b, slot]
            if not mask.any():
                assert box[2] - box[0] == 0 or box[3] - box[1] == 0
                continue
            ys, xs = np.nonzero(mask)
            tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            np.testing.assert_allclose(box, tight, atol=2.01)


def test_masks_boxes_and_image_share_the_jittered_geometry(dataset):
    ds = dataset.as_tf_dataset(
        batch_size=2,
        canvas=CANVAS,
        large_scale_jitter=JITTER,
        max_instances=4,
        seed=5,
        repeat=True,
        mask_targets="full",
    )
    extents = []
    for images, targets in ds.take(40):
        _check_batch(
            images.numpy(), {k: v.numpy() for k, v in targets.items()}, extents
        )
    extents = np.array(extents)
    # The fit-to-canvas factor is 1 for both images; the jitter spans
    # 0.25..2: small images (content < 48 px) and cropped ones (full canvas).
    assert (extents.max(axis=1) < 48).any()
    assert (extents == 128).all(axis=1).any()
    assert len({tuple(e) for e in extents}) > 20


def test_evaluation_fits_the_canvas_like_no_jitter(dataset):
    kwargs = dict(batch_size=2, canvas=CANVAS, training=False)
    a = next(
        iter(
            dataset.as_tf_dataset(
                large_scale_jitter=JITTER, **kwargs, mask_targets="full"
            )
        )
    )
    b = next(iter(dataset.as_tf_dataset(**kwargs, mask_targets="full")))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    for key in ("masks", "labels", "boxes"):
        np.testing.assert_array_equal(a[1][key].numpy(), b[1][key].numpy())


def test_tfrecords_jitter_like_the_coco_reader(dataset, tmp_path):
    write_tfrecords(dataset, str(tmp_path / "r"), num_shards=2, progress=False)
    kwargs = dict(
        batch_size=2,
        canvas=CANVAS,
        large_scale_jitter=JITTER,
        max_instances=4,
        shuffle=False,
        seed=2,
        repeat=True,
    )
    coco = dataset.as_tf_dataset(**kwargs, mask_targets="full").take(6)
    records = read_tfrecords(str(tmp_path / "r-*"), **kwargs, mask_targets="full").take(
        6
    )
    for (ci, ct), (ri, rt) in zip(coco, records, strict=True):
        np.testing.assert_allclose(ci.numpy(), ri.numpy(), atol=1e-5)
        for key in ("masks", "labels", "boxes"):
            np.testing.assert_array_equal(ct[key].numpy(), rt[key].numpy())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(large_scale_jitter=(0.1, 2.0), scales=[(128, 96)]), "not"),
        (dict(large_scale_jitter=(2.0, 0.1)), "low <="),
        (dict(large_scale_jitter=(0.0, 1.0)), "0 < low"),
        (dict(large_scale_jitter=1.5), "pair"),
    ],
)
def test_bad_jitter_arguments(dataset, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dataset.as_tf_dataset(
            batch_size=1, canvas=CANVAS, **kwargs, mask_targets="full"
        )


def test_tfds_jitters_like_the_coco_reader(dataset):
    examples = []
    for index in range(len(dataset)):
        record = dataset.image_record(index)
        h, w = record["height"], record["width"]
        with Image.open(record["path"]) as pil:
            image = np.asarray(pil.convert("RGB"))
        instances = dataset.instances(index)
        rles = [mask_utils.frPyObjects(i["segmentation"], h, w) for i in instances]
        masks = np.stack([mask_utils.decode(r)[..., 0] for r in rles])
        boxes = [
            [x, y, x + bw, y + bh] for x, y, bw, bh in (i["bbox"] for i in instances)
        ]
        examples.append((image, masks, [i["label"] for i in instances], boxes))

    def generate():
        for image, masks, labels, boxes in examples:
            yield {
                "image": image,
                "objects": {"mask": masks, "label": labels, "box": boxes},
            }

    raw = tf.data.Dataset.from_generator(
        generate,
        output_signature={
            "image": tf.TensorSpec([None, None, 3], tf.uint8),
            "objects": {
                "mask": tf.TensorSpec([None, None, None], tf.uint8),
                "label": tf.TensorSpec([None], tf.int64),
                "box": tf.TensorSpec([None, 4], tf.float64),
            },
        },
    )
    kwargs = dict(
        batch_size=2,
        canvas=CANVAS,
        large_scale_jitter=JITTER,
        max_instances=4,
        seed=4,
        repeat=True,
    )
    tfds_ds = from_tfds(
        raw,
        feature_map={"boxes": "objects/box"},
        box_format="xyxy",
        **kwargs,
        mask_targets="full",
    )
    coco = dataset.as_tf_dataset(shuffle=False, **kwargs, mask_targets="full")
    for (ci, ct), (ti, tt) in zip(coco.take(6), tfds_ds.take(6), strict=True):
        np.testing.assert_allclose(ci.numpy(), ti.numpy(), atol=1e-5)
        for key in ("masks", "labels", "boxes"):
            np.testing.assert_array_equal(ct[key].numpy(), tt[key].numpy())
