"""Tests for the COCO reader and its `tf.data` pipeline.

The expected batches are rebuilt independently: images with PIL decoding and a
numpy bilinear resize, masks with pycocotools' own `COCO.annToMask` and an
exact (fractions) nearest-neighbour resize, boxes from the json `bbox`.
"""

import contextlib
import io

import numpy as np
import pytest
import tensorflow as tf
from coco_mini import ANN_FILE, IMAGE_DIR, load_json
from coco_reference import LEVEL, check_batch
from image_reference import (
    assert_mean_padding,
    bilinear,
    mmdet_normalized,
    valid_extent,
)
from PIL import Image
from pycocotools.coco import COCO

from keras_solov2.data import CocoDataset
from keras_solov2.utils import image_geometry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


@pytest.fixture(scope="module")
def coco():
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ANN_FILE))


@pytest.fixture(scope="module")
def dataset():
    return CocoDataset(str(ANN_FILE), str(IMAGE_DIR))


@pytest.fixture(scope="module")
def pil_images(coco):
    out = {}
    for image_id, info in coco.imgs.items():
        with Image.open(IMAGE_DIR / info["file_name"]) as pil:
            out[image_id] = np.asarray(pil.convert("RGB"), np.float64)
    return out


def test_stats_and_sparse_label_mapping(dataset):
    data = load_json()
    assert dataset.num_images == len(dataset) == 5
    assert dataset.category_ids == sorted(c["id"] for c in data["categories"])
    assert dataset.num_classes == 80 and dataset.category_ids[-1] == 90
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert dataset.class_names == [names[i] for i in dataset.category_ids]
    assert dataset.label_of(90) == 79 and dataset.class_names[79] == "toothbrush"
    assert dataset.label_of(1) == 0 and dataset.label_of(13) == 11  # 12 is absent
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert [a["id"] for a in crowd] == [908400553664]  # 64-bit id
    assert dataset.stats["images"] == 5
    assert dataset.stats["annotations"] == 43
    assert dataset.stats["crowd"] == 1
    assert dataset.stats["instances"] == 42
    assert sum(dataset.stats["skipped"].values()) == 0
    assert dataset.stats["images_without_instances"] == 0
    kept_ids = {a["id"] for i in range(5) for a in dataset.instances(i)}
    assert 908400553664 not in kept_ids and len(kept_ids) == 42
    assert dataset.image_ids == [im["id"] for im in data["images"]]


def test_training_batches_match_reference(dataset, coco, pil_images):
    scales = [(512, 400), (448, 288), (640, 320)]
    canvas, m = (512, 512), 20
    ds = dataset.as_tf_dataset(
        batch_size=2,
        canvas=canvas,
        scales=scales,
        max_instances=m,
        training=True,
        seed=5,
        mask_targets="full",
    )
    assert ds.element_spec[0].shape == (2, 512, 512, 3)
    assert ds.element_spec[1]["masks"].shape == (2, m, 512, 512)
    assert ds.element_spec[1]["labels"].shape == (2, m)
    assert ds.element_spec[1]["boxes"].shape == (2, m, 4)
    seen = []
    for _ in range(3):  # three passes, reshuffled each time
        for images, targets in ds:
            assert images.dtype == tf.float32
            assert targets["masks"].dtype == tf.uint8
            assert targets["labels"].dtype == tf.int32
            assert targets["boxes"].dtype == tf.float32
            targets = {k: v.numpy() for k, v in targets.items()}
            assert set(np.unique(targets["masks"])) <= {0, 1}
            seen += check_batch(
                images.numpy(), targets, coco, pil_images, scales, canvas, m
            )
    assert len(seen) == 12
    assert {s[2] for s in seen} == {False, True}  # both flips happen
    assert len({s[1] for s in seen}) >= 2  # several scales drawn
    assert len({s[0] for s in seen}) == 5  # every image visited


def test_eval_mode_order_first_scale_no_flip(dataset, coco, pil_images):
    scales = [(512, 400), (448, 288)]
    ds = dataset.as_tf_dataset(
        batch_size=5,
        canvas=(512, 512),
        scales=scales,
        training=False,
        mask_targets="full",
    )
    images, targets = next(iter(ds))
    targets = {k: v.numpy() for k, v in targets.items()}
    seen = check_batch(
        images.numpy(), targets, coco, pil_images, scales, (512, 512), 100
    )
    assert [s[0] for s in seen] == dataset.image_ids
    assert all(s[1] == 0 and not s[2] for s in seen)
    # Padding slots: label -1, zero masks and boxes.
    counts = [len(dataset.instances(i)) for i in range(5)]
    for b, n in enumerate(counts):
        assert (targets["labels"][b, :n] >= 0).all()
        assert (targets["labels"][b, n:] == -1).all()
        assert not targets["masks"][b, n:].any()
        assert not targets["boxes"][b, n:].any()
        assert targets["masks"][b, :n].reshape(n, -1).any(axis=1).all()


def test_fit_to_canvas_without_scales(dataset, coco, pil_images):
    ds = dataset.as_tf_dataset(
        batch_size=5,
        canvas=(320, 352),
        training=False,
        max_instances=30,
        mask_targets="full",
    )
    images, targets = next(iter(ds))
    for b, image_id in enumerate(dataset.image_ids):
        h, w = coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]
        rh, rw = valid_extent(images[b].numpy())
        factor = min(320 / h, 352 / w)
        assert (rh, rw) == (int(h * factor + 0.5), int(w * factor + 0.5))
        assert rh == 320 or rw == 352


def test_flip_moves_image_masks_and_boxes(dataset):
    kwargs = dict(
        batch_size=5,
        canvas=(448, 448),
        scales=[(448, 320)],
        max_instances=30,
        shuffle=False,
    )
    plain = next(
        iter(dataset.as_tf_dataset(training=False, **kwargs, mask_targets="full"))
    )
    flipped = next(
        iter(
            dataset.as_tf_dataset(
                training=True, flip_probability=1.0, **kwargs, mask_targets="full"
            )
        )
    )
    unflipped = next(
        iter(
            dataset.as_tf_dataset(
                training=True, flip_probability=0.0, **kwargs, mask_targets="full"
            )
        )
    )
    for key in ("masks", "labels", "boxes"):
        np.testing.assert_array_equal(unflipped[1][key], plain[1][key])
    np.testing.assert_array_equal(unflipped[0], plain[0])
    for b in range(5):
        image = plain[0][b].numpy()
        rh, rw = valid_extent(image)
        np.testing.assert_array_equal(
            flipped[0][b].numpy()[:rh, :rw], image[:rh, :rw][:, ::-1]
        )
        masks = plain[1]["masks"][b].numpy()
        np.testing.assert_array_equal(
            flipped[1]["masks"][b].numpy()[:, :rh, :rw], masks[:, :rh, :rw][:, :, ::-1]
        )
        boxes = plain[1]["boxes"][b].numpy()
        valid = plain[1]["labels"][b].numpy() >= 0
        expected = boxes.copy()
        expected[valid, 0] = rw - boxes[valid, 2]
        expected[valid, 2] = rw - boxes[valid, 0]
        np.testing.assert_allclose(flipped[1]["boxes"][b], expected, atol=1e-4)
        assert (expected[valid, 0] <= expected[valid, 2]).all()


def _summary(ds, passes=2):
    out = []
    for _ in range(passes):
        for images, targets in ds:
            out.append((images.numpy().sum(axis=(1, 2, 3)), targets["labels"].numpy()))
    return out


def test_deterministic_given_seed(dataset):
    kwargs = dict(batch_size=2, canvas=(448, 448), scales=[(448, 320), (384, 256)])
    a = _summary(dataset.as_tf_dataset(seed=3, **kwargs, mask_targets="full"))
    b = _summary(dataset.as_tf_dataset(seed=3, **kwargs, mask_targets="full"))
    c = _summary(dataset.as_tf_dataset(seed=4, **kwargs, mask_targets="full"))
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert any(
        not np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c, strict=True)
    )
    # A new pass reshuffles and redraws (not the same batches every epoch).
    assert any(not np.array_equal(a[i][0], a[i + 2][0]) for i in range(2))
    # repeat=True starts with the same epoch (then batches span epochs).
    rep = dataset.as_tf_dataset(
        seed=3, repeat=True, **kwargs, mask_targets="full"
    ).take(2)
    for (ia, _), (ir, _) in zip(a[:2], _summary(rep, passes=1), strict=True):
        np.testing.assert_array_equal(ia, ir)


def test_raw_images_normalise_to_mmdetection_input(dataset, pil_images):
    # Fit-to-canvas: both the bottom and the right padding occur.
    images, _ = next(
        iter(
            dataset.as_tf_dataset(
                batch_size=5, canvas=(512, 544), training=False, mask_targets="full"
            )
        )
    )
    images = images.numpy()
    assert images.dtype == np.float32
    for b, image_id in enumerate(dataset.image_ids):
        h, w = pil_images[image_id].shape[:2]
        rh, rw = valid_extent(images[b])
        expected = bilinear(pil_images[image_id], rh, rw)
        assert np.abs(images[b, :rh, :rw] - expected).max() <= LEVEL
        # Padded with PIXEL_MEAN, so that normalising gives zero there.
        assert_mean_padding(images[b], rh, rw)
        normalized = np.asarray(image_geometry.normalize(images[b]))
        np.testing.assert_array_equal(normalized, mmdet_normalized(images[b], rh, rw))
        assert not normalized[rh:].any() and not normalized[:, rw:].any()
    assert {valid_extent(i)[0] for i in images} != {512}  # some bottom padding
    assert {valid_extent(i)[1] for i in images} != {544}  # some right padding
