"""Tests for the COCO reader and its `tf.data` pipeline.

The expected batches are rebuilt independently: images with PIL decoding and a
numpy bilinear resize, masks with pycocotools' own `COCO.annToMask` and an
exact (fractions) nearest-neighbour resize, boxes from the json `bbox`.
"""

import contextlib
import io
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from image_reference import (
    assert_mean_padding,
    bilinear,
    keep_ratio_size,
    mmdet_normalized,
    valid_extent,
)
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from keras_solov2.data import CocoDataset, generate_shapes_dataset, load_coco
from keras_solov2.utils import image_geometry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)

FIXTURE = Path(__file__).parent / "fixtures" / "coco_mini"
ANN_FILE = FIXTURE / "annotations" / "instances_val2017.json"
IMAGE_DIR = FIXTURE / "val2017"
LEVEL = 1.0  # one step of the 0..255 grid


def _json():
    with open(ANN_FILE) as f:
        return json.load(f)


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


def _nearest(mask, out_h, out_w):
    """Pixel-centre nearest neighbour with exact rational arithmetic."""
    h, w = mask.shape
    rows = [math.floor((i + Fraction(1, 2)) * h / out_h) for i in range(out_h)]
    cols = [math.floor((j + Fraction(1, 2)) * w / out_w) for j in range(out_w)]
    return mask[np.ix_(rows, cols)]


def _identify(image, coco, pil_images, scales):
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


def _expected_targets(coco, image_id, size, flip, canvas, m):
    rh, rw = size
    info = coco.imgs[image_id]
    h, w = info["height"], info["width"]
    cat_ids = sorted(coco.cats)
    anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]][:m]
    masks = np.zeros((m,) + canvas, np.uint8)
    labels = np.full((m,), -1, np.int32)
    boxes = np.zeros((m, 4), np.float32)
    for k, ann in enumerate(anns):
        resized = _nearest(coco.annToMask(ann), rh, rw)
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


def _check_batch(images, targets, coco, pil_images, scales, canvas, m):
    seen = []
    for b in range(images.shape[0]):
        image_id, s, flip, size = _identify(images[b], coco, pil_images, scales)
        masks, labels, boxes, n = _expected_targets(
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


def test_stats_and_sparse_label_mapping(dataset):
    data = _json()
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
            seen += _check_batch(
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
    seen = _check_batch(
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


def test_truncation_is_counted(coco):
    ds_obj = CocoDataset(str(ANN_FILE), str(IMAGE_DIR))
    counts = [
        sum(1 for a in coco.imgToAnns[i] if not a["iscrowd"]) for i in ds_obj.image_ids
    ]
    with pytest.warns(UserWarning, match="max_instances=5"):
        ds = ds_obj.as_tf_dataset(
            batch_size=5,
            canvas=(448, 448),
            max_instances=5,
            training=False,
            mask_targets="full",
        )
    assert ds_obj.stats["max_instances"] == 5
    assert ds_obj.stats["truncated_images"] == sum(c > 5 for c in counts)
    assert ds_obj.stats["truncated_instances"] == sum(max(c - 5, 0) for c in counts)
    _, targets = next(iter(ds))
    valid = (targets["labels"].numpy() >= 0).sum(axis=1)
    np.testing.assert_array_equal(valid, np.minimum(counts, 5))


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_unknown_category_raises_or_is_counted(tmp_path):
    data = _json()
    bad = next(a for a in data["annotations"] if a["id"] == 160392)
    bad["category_id"] = 1000
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=r"160392.*000000205401\.jpg.*1000"):
        CocoDataset(path, str(IMAGE_DIR))
    with pytest.warns(UserWarning, match="unknown_category_id"):
        skipped = load_coco(path, str(IMAGE_DIR), on_invalid="skip")
    assert skipped.stats["skipped"]["unknown_category_id"] == 1
    assert skipped.stats["instances"] == 41
    assert skipped.skipped_annotations[0][:2] == (160392, "unknown_category_id")


def test_empty_mask_and_unknown_image_raise(tmp_path):
    data = _json()
    target = next(a for a in data["annotations"] if a["id"] == 148103)
    target["segmentation"] = [[10.0, 10.0, 20.0, 10.0, 30.0, 10.0]]
    with pytest.raises(ValueError, match=r"148103.*000000165518\.jpg.*empty mask"):
        CocoDataset(_write(tmp_path, data), str(IMAGE_DIR))
    data = _json()
    data["annotations"][0]["image_id"] = 123456789012
    with pytest.raises(ValueError, match=r"unknown image_id 123456789012"):
        CocoDataset(_write(tmp_path, data), str(IMAGE_DIR))


def test_missing_image_file_raises(tmp_path):
    data = _json()
    data["images"][2]["file_name"] = "000000999999_missing.jpg"
    with pytest.raises(FileNotFoundError, match="000000999999_missing.jpg"):
        CocoDataset(_write(tmp_path, data), str(IMAGE_DIR))


def test_size_mismatch_raises_when_loading(tmp_path):
    data = _json()
    data["images"] = [im for im in data["images"] if im["id"] == 205401]
    data["images"][0]["height"] = 400  # real height is 408
    data["annotations"] = []
    ds = CocoDataset(_write(tmp_path, data), str(IMAGE_DIR)).as_tf_dataset(
        batch_size=1, canvas=(448, 640), training=False, mask_targets="full"
    )
    with pytest.raises(tf.errors.OpError, match=r"000000205401\.jpg.*408x640"):
        next(iter(ds))


def test_bad_canvas_and_scales(dataset):
    with pytest.raises(ValueError, match="multiple"):
        dataset.as_tf_dataset(batch_size=1, canvas=(500, 512), mask_targets="full")
    with pytest.raises(ValueError, match=r"\.jpg.*does not fit.*a 640x640 canvas"):
        dataset.as_tf_dataset(
            batch_size=1, canvas=(320, 320), scales=(640, 480), mask_targets="full"
        )
    # Without scales the canvas is what the images are resized to fit.
    for kwargs in ({}, {"large_scale_jitter": (0.1, 2.0)}):
        with pytest.raises(ValueError, match="`canvas`.*required without"):
            dataset.as_tf_dataset(batch_size=1, **kwargs, mask_targets="full")


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


def _with_portrait(tmp_path):
    """coco_mini plus a portrait image: 000000434204.jpg transposed (500x333)."""
    data = _json()
    source = next(im for im in data["images"] if im["id"] == 434204)
    with Image.open(IMAGE_DIR / source["file_name"]) as pil:
        pixels = np.asarray(pil.convert("RGB"))
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 0, 2))).save(
        tmp_path / "portrait.png"
    )
    for im in data["images"]:
        (tmp_path / im["file_name"]).symlink_to(IMAGE_DIR / im["file_name"])
    portrait = {
        "id": 7,
        "file_name": "portrait.png",
        "height": source["width"],
        "width": source["height"],
    }
    data["images"].append(portrait)
    for ann in list(data["annotations"]):
        if ann["image_id"] == 434204 and not ann["iscrowd"]:
            x, y, w, h = ann["bbox"]
            swapped = [
                [v for pair in zip(p[1::2], p[0::2], strict=True) for v in pair]
                for p in ann["segmentation"]
            ]
            data["annotations"].append(
                dict(
                    ann,
                    id=ann["id"] + 10**6,
                    image_id=7,
                    bbox=[y, x, h, w],
                    segmentation=swapped,
                )
            )
    path = _write(tmp_path, data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    pil = {}
    for image_id, info in coco.imgs.items():
        with Image.open(tmp_path / info["file_name"]) as image:
            pil[image_id] = np.asarray(image.convert("RGB"), np.float64)
    return path, coco, pil


def test_default_canvas_fits_portrait_and_landscape(tmp_path):
    path, coco, pil_images = _with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    shapes = {(im["height"] > im["width"]) for im in coco.imgs.values()}
    assert shapes == {False, True}  # portrait and landscape
    scales = [(768, 512), (768, 448)]
    # The README's first example used to fail here: a 512x768 canvas does
    # not hold the portrait image. The message says which canvas would.
    with pytest.raises(
        ValueError,
        match=r"'portrait\.png' \(500x333\) resized with scale \(768, 512\) becomes "
        r"768x511, which does not fit the 512x768 canvas.*768x768.*omitting",
    ):
        data.as_tf_dataset(
            batch_size=2, canvas=(512, 768), scales=scales, mask_targets="full"
        )
    # The README's call, as it now reads.
    readme = data.as_tf_dataset(
        batch_size=8, scales=scales, max_instances=50, repeat=True, mask_targets="full"
    )
    images, targets = next(iter(readme))
    assert images.shape == (8, 768, 768, 3)
    assert targets["masks"].shape == (8, 50, 768, 768)
    ds = data.as_tf_dataset(
        batch_size=2, scales=scales, max_instances=50, seed=1, mask_targets="full"
    )
    assert ds.element_spec[0].shape == (2, 768, 768, 3)
    assert ds.element_spec[1]["masks"].shape == (2, 50, 768, 768)
    seen = []
    for _ in range(2):
        for images, targets in ds:
            targets = {k: v.numpy() for k, v in targets.items()}
            seen += _check_batch(
                images.numpy(), targets, coco, pil_images, scales, (768, 768), 50
            )
    assert {s[0] for s in seen} == set(coco.imgs)
    assert 7 in {s[0] for s in seen}
    # Same seed and arguments, the canvas given explicitly: the same batches.
    kwargs = dict(batch_size=2, scales=scales, max_instances=50, seed=1)
    implicit = data.as_tf_dataset(**kwargs, mask_targets="full")
    explicit = data.as_tf_dataset(canvas=(768, 768), **kwargs, mask_targets="full")
    for (a, ta), (b, tb) in zip(implicit, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta["masks"], tb["masks"])


def test_size_divisor_sets_the_canvas_multiple(dataset):
    # 650 is 21 x 32 + 8 and 10 x 64 + 10: the default square differs.
    ds = dataset.as_tf_dataset(
        batch_size=1, scales=[(650, 400)], training=False, mask_targets="full"
    )
    assert ds.element_spec[0].shape == (1, 672, 672, 3)
    ds = dataset.as_tf_dataset(
        batch_size=1,
        scales=[(650, 400)],
        training=False,
        size_divisor=64,
        mask_targets="full",
    )
    assert ds.element_spec[0].shape == (1, 704, 704, 3)
    images, _ = next(iter(ds))
    assert valid_extent(images[0].numpy()) == keep_ratio_size(612, 612, (650, 400))
    # 480 is a multiple of 32 but not of 64.
    dataset.as_tf_dataset(batch_size=1, canvas=(480, 480), mask_targets="full")
    with pytest.raises(ValueError, match=r"multiples of `size_divisor` \(64\)"):
        dataset.as_tf_dataset(
            batch_size=1, canvas=(480, 480), size_divisor=64, mask_targets="full"
        )
    for bad in (0, -32, 2.5, True):
        with pytest.raises(ValueError, match="size_divisor"):
            dataset.as_tf_dataset(
                batch_size=1,
                canvas=(480, 480),
                size_divisor=bad,
                mask_targets="full",
            )


def test_grayscale_rgba_rle_negatives_and_64bit_ids(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 64, 96
    gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    Image.fromarray(gray, "L").save(tmp_path / "gray.jpg", quality=90)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray, "L").save(tmp_path / "empty.png")
    big = 2**40
    mask = np.zeros((h, w), np.uint8)
    mask[5:30, 10:50] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    column = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(column)) + 1
    runs = np.diff(np.concatenate([[0], changes, [column.size]])).tolist()
    images = [
        {"id": big + i, "file_name": name, "height": h, "width": w}
        for i, name in enumerate(["gray.png", "rgba.png", "gray.jpg", "empty.png"])
    ]
    anns = [
        {  # two-part polygon
            "id": 2**50 + 1,
            "image_id": big,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20], [60, 40, 90, 40, 75, 60]],
            "bbox": [2, 2, 88, 58],
        },
        {  # compressed RLE, not crowd
            "id": 2**50 + 2,
            "image_id": big + 1,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": {
                "size": [h, w],
                "counts": compressed["counts"].decode("ascii"),
            },
            "bbox": [10, 5, 40, 25],
        },
        {  # uncompressed RLE, not crowd (first run is background)
            "id": 2**50 + 3,
            "image_id": big + 2,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": {"size": [h, w], "counts": runs},
            "bbox": [10, 5, 40, 25],
        },
    ]
    cats = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    path = _write(tmp_path, data)
    ds_obj = CocoDataset(path, str(tmp_path))
    assert ds_obj.category_ids == [3, 7] and ds_obj.class_names == ["three", "seven"]
    assert ds_obj.stats["images_without_instances"] == 1
    ds = ds_obj.as_tf_dataset(
        batch_size=4,
        canvas=(64, 96),
        training=False,
        max_instances=3,
        mask_targets="full",
    )
    images, targets = next(iter(ds))
    images = images.numpy()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    for b, name in enumerate(["gray.png", "rgba.png", "gray.jpg", "empty.png"]):
        with Image.open(tmp_path / name) as pil:
            rgb = np.asarray(pil.convert("RGB"), np.float64)
        np.testing.assert_array_equal(images[b], rgb)  # the canvas is the image
        ann_ids = coco.getAnnIds(imgIds=[big + b])
        expected = np.zeros((3, h, w), np.uint8)
        for k, ann in enumerate(coco.loadAnns(ann_ids)):
            expected[k] = coco.annToMask(ann)
        np.testing.assert_array_equal(targets["masks"][b], expected)
    np.testing.assert_array_equal(
        targets["labels"], [[1, -1, -1], [0, -1, -1], [1, -1, -1], [-1, -1, -1]]
    )
    np.testing.assert_array_equal(targets["masks"][1, 0], mask)
    np.testing.assert_array_equal(targets["masks"][2, 0], mask)
    np.testing.assert_allclose(targets["boxes"][1, 0], [10, 5, 50, 30])


def test_reads_generated_shapes(tmp_path):
    path = generate_shapes_dataset(str(tmp_path), 6, seed=2, mask_format="polygon")
    ds_obj = CocoDataset(path, str(tmp_path / "images"))
    assert ds_obj.class_names == ["circle", "triangle", "square", "star"]
    images, targets = next(
        iter(
            ds_obj.as_tf_dataset(
                batch_size=6,
                canvas=(128, 128),
                training=False,
                max_instances=8,
                mask_targets="full",
            )
        )
    )
    targets = {k: v.numpy() for k, v in targets.items()}
    assert images.shape == (6, 128, 128, 3)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    for b, image_id in enumerate(ds_obj.image_ids):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        for k, ann in enumerate(anns):
            np.testing.assert_array_equal(targets["masks"][b, k], coco.annToMask(ann))
            assert targets["labels"][b, k] == ann["category_id"] - 1
        assert (targets["labels"][b, len(anns) :] == -1).all()


def test_fixture_is_self_contained():
    data = _json()
    files = sorted(p.name for p in IMAGE_DIR.iterdir())
    assert files == sorted(im["file_name"] for im in data["images"])
    attribution = (FIXTURE / "ATTRIBUTION.md").read_text()
    for im in data["images"]:
        assert f"val2017/{im['file_name']} | {im['id']} |" in attribution
        assert im["flickr_url"] in attribution
    assert attribution.count("| val2017/") == len(data["images"])
    # Covers what the reader must handle.
    anns = data["annotations"]
    assert any(a["iscrowd"] and isinstance(a["segmentation"], dict) for a in anns)
    assert any(
        isinstance(a["segmentation"], list) and len(a["segmentation"]) > 1 for a in anns
    )
    assert max(a["category_id"] for a in anns) == 90


def test_every_annotation_reaches_the_batches_or_the_report(tmp_path):
    # Instances in the batches == non-crowd annotations - the skip report, and
    # everything not reported decodes to a non-empty mask with pycocotools.
    data = _json()
    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    anns[0]["category_id"] = 999  # unknown category
    anns[1]["segmentation"] = [[1.0, 1.0, 2.0, 2.0]]  # degenerate polygon
    broken = {anns[0]["id"], anns[1]["id"]}
    path = _write(tmp_path, data)
    with pytest.warns(UserWarning):
        dataset = load_coco(path, str(IMAGE_DIR), on_invalid="skip")
    reported = {entry[0] for entry in dataset.skipped_annotations}
    assert reported == broken
    batches = dataset.as_tf_dataset(
        batch_size=1,
        canvas=(672, 672),
        max_instances=100,
        training=False,
        drop_remainder=False,
        mask_targets="full",
    )
    in_batches = sum(int(np.sum(t["labels"].numpy() >= 0)) for _, t in batches)
    assert dataset.stats["truncated_instances"] == 0
    assert in_batches == len(anns) - len(reported)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(path)
    for ann in anns:
        if ann["id"] not in reported:
            assert reference.annToMask(ann).any(), ann["id"]


def test_bbox_disagreeing_with_its_mask(tmp_path):
    data = _json()
    ann = next(a for a in data["annotations"] if not a.get("iscrowd", 0))
    x, y, w, h = ann["bbox"]
    ann["bbox"] = [x, y, x + w + 20, y + h + 20]  # xyxy written as xywh
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=rf"{ann['id']}.*disagrees with its mask"):
        CocoDataset(path, str(IMAGE_DIR))
    with pytest.warns(UserWarning, match="bbox_mask_mismatch"):
        skipped = load_coco(path, str(IMAGE_DIR), on_invalid="skip")
    assert skipped.stats["skipped"]["bbox_mask_mismatch"] == 1


def test_cmyk_jpeg_decodes_like_pillow():
    from keras_solov2.data.images import decode_rgb

    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG", quality=95)
    decoded = decode_rgb(tf.constant(buffer.getvalue())).numpy()
    with Image.open(io.BytesIO(buffer.getvalue())) as pil:
        assert pil.mode == "CMYK"
        expected = np.asarray(pil.convert("RGB"))
    assert decoded.shape == (20, 30, 3)
    np.testing.assert_array_equal(decoded, expected)


def test_entries_without_required_keys_are_named(tmp_path):
    data = _json()
    del data["images"][3]["height"]
    with pytest.raises(ValueError, match=r"Entry 3 of 'images'.*lacks \['height'\]"):
        CocoDataset(_write(tmp_path, data), str(IMAGE_DIR))
    data = _json()
    del data["categories"][1]["id"]
    with pytest.raises(ValueError, match=r"Entry 1 of 'categories'.*has no id"):
        CocoDataset(_write(tmp_path, data), str(IMAGE_DIR))


def test_aspect_ratio_grouping_puts_each_orientation_on_its_canvas(tmp_path):
    path, coco, pil_images = _with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    scales = [(768, 512), (768, 448)]
    kwargs = dict(batch_size=2, scales=scales, max_instances=50, seed=1)
    ds = data.as_tf_dataset(**kwargs, mask_targets="full", aspect_ratio_grouping=True)
    # Default canvases: (max short, max long) and its transpose, against
    # the 768x768 square that fits both orientations.
    assert ds.element_spec[0].shape.as_list() == [2, None, None, 3]
    portrait_ids = {i for i, im in coco.imgs.items() if im["height"] > im["width"]}
    assert portrait_ids == {7}
    seen, pixels = [], 0
    for _ in range(3):
        for images, targets in ds:
            canvas = tuple(images.shape[1:3])
            assert canvas in {(512, 768), (768, 512)}
            targets = {k: v.numpy() for k, v in targets.items()}
            assert targets["masks"].shape[2:] == canvas
            batch = _check_batch(
                images.numpy(), targets, coco, pil_images, scales, canvas, 50
            )
            # Every image of a batch has the orientation of its canvas.
            for image_id, _, _ in batch:
                assert (image_id in portrait_ids) == (canvas == (768, 512))
            seen += batch
            pixels += images.shape[0] * canvas[0] * canvas[1]
    # 6 images: 5 landscape or square, 1 portrait; batches of 2 drop one
    # incomplete landscape batch and the lone portrait image per epoch.
    assert len(seen) == 3 * 4
    assert pixels == len(seen) * 512 * 768 < len(seen) * 768 * 768
    # An explicit canvas is sorted into the landscape one; too small a
    # canvas names the image and the canvases that would fit.
    explicit = data.as_tf_dataset(
        canvas=(768, 512), **kwargs, aspect_ratio_grouping=True
    )
    implicit = data.as_tf_dataset(**kwargs, aspect_ratio_grouping=True)
    for (a, ta), (b, tb) in zip(implicit, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta["mask_targets"], tb["mask_targets"])
    with pytest.raises(
        ValueError,
        match=r"'000000434204\.jpg' \(333x500\) resized with scale \(768, 512\) "
        r"becomes 511x768, which does not fit the 512x736 canvas.*512x768 \(and "
        r"768x512 for portrait images\)",
    ):
        data.as_tf_dataset(canvas=(736, 512), **kwargs, aspect_ratio_grouping=True)
    with pytest.raises(ValueError, match="`aspect_ratio_grouping` must be True or"):
        data.as_tf_dataset(**kwargs, aspect_ratio_grouping="yes")


def test_aspect_ratio_grouping_is_the_square_canvas_without_its_padding(tmp_path):
    path, _, _ = _with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    kwargs = dict(
        batch_size=1,
        scales=[(768, 512), (768, 448)],
        max_instances=50,
        seed=4,
        shuffle=False,
    )
    square = data.as_tf_dataset(**kwargs)
    grouped = data.as_tf_dataset(**kwargs, aspect_ratio_grouping=True)
    assert square.element_spec[0].shape == (1, 768, 768, 3)
    mean = np.float32(image_geometry.PIXEL_MEAN)
    count = 0
    for (a, ta), (b, tb) in zip(square, grouped, strict=True):
        a, b = a.numpy(), b.numpy()
        h, w = b.shape[1:3]
        np.testing.assert_array_equal(a[:, :h, :w], b)
        assert (a[:, h:] == mean).all() and (a[:, :, w:] == mean).all()
        for key in ("labels", "boxes", "mask_centers", "mask_areas"):
            np.testing.assert_array_equal(ta[key], tb[key])
        small = ta["mask_targets"].numpy()
        np.testing.assert_array_equal(
            small[:, :, : h // 4, : w // 4], tb["mask_targets"]
        )
        assert not small[:, :, h // 4 :].any() and not small[:, :, :, w // 4 :].any()
        count += 1
    assert count == 6
