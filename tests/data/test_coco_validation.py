"""The COCO reader's checks: bad annotations, files and options, odd images.

Nothing is dropped silently: each problem raises naming the annotation, the
file and the json, or is skipped and counted (`on_invalid="skip"`).
"""

import contextlib
import io

import numpy as np
import pytest
import tensorflow as tf
from coco_mini import ANN_FILE, FIXTURE, IMAGE_DIR, load_json, write_json
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from keras_solov2.data import CocoDataset, generate_shapes_dataset, load_coco

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


@pytest.fixture(scope="module")
def dataset():
    return CocoDataset(str(ANN_FILE), str(IMAGE_DIR))


def test_truncation_is_counted():
    ds_obj = CocoDataset(str(ANN_FILE), str(IMAGE_DIR))
    annotations = load_json()["annotations"]
    counts = [
        sum(a["image_id"] == i and not a["iscrowd"] for a in annotations)
        for i in ds_obj.image_ids
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


def test_unknown_category_raises_or_is_counted(tmp_path):
    data = load_json()
    bad = next(a for a in data["annotations"] if a["id"] == 160392)
    bad["category_id"] = 1000
    path = write_json(tmp_path, data)
    with pytest.raises(ValueError, match=r"160392.*000000205401\.jpg.*1000"):
        CocoDataset(path, str(IMAGE_DIR))
    with pytest.warns(UserWarning, match="unknown_category_id"):
        skipped = load_coco(path, str(IMAGE_DIR), on_invalid="skip")
    assert skipped.stats["skipped"]["unknown_category_id"] == 1
    assert skipped.stats["instances"] == 41
    assert skipped.skipped_annotations[0][:2] == (160392, "unknown_category_id")


def test_empty_mask_and_unknown_image_raise(tmp_path):
    data = load_json()
    target = next(a for a in data["annotations"] if a["id"] == 148103)
    target["segmentation"] = [[10.0, 10.0, 20.0, 10.0, 30.0, 10.0]]
    with pytest.raises(ValueError, match=r"148103.*000000165518\.jpg.*empty mask"):
        CocoDataset(write_json(tmp_path, data), str(IMAGE_DIR))
    data = load_json()
    data["annotations"][0]["image_id"] = 123456789012
    with pytest.raises(ValueError, match=r"unknown image_id 123456789012"):
        CocoDataset(write_json(tmp_path, data), str(IMAGE_DIR))


def test_missing_image_file_raises(tmp_path):
    data = load_json()
    data["images"][2]["file_name"] = "000000999999_missing.jpg"
    with pytest.raises(FileNotFoundError, match="000000999999_missing.jpg"):
        CocoDataset(write_json(tmp_path, data), str(IMAGE_DIR))


def test_size_mismatch_raises_when_loading(tmp_path):
    data = load_json()
    data["images"] = [im for im in data["images"] if im["id"] == 205401]
    data["images"][0]["height"] = 400  # real height is 408
    data["annotations"] = []
    ds = CocoDataset(write_json(tmp_path, data), str(IMAGE_DIR)).as_tf_dataset(
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
    path = write_json(tmp_path, data)
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
    data = load_json()
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
    data = load_json()
    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    anns[0]["category_id"] = 999  # unknown category
    anns[1]["segmentation"] = [[1.0, 1.0, 2.0, 2.0]]  # degenerate polygon
    broken = {anns[0]["id"], anns[1]["id"]}
    path = write_json(tmp_path, data)
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
    data = load_json()
    ann = next(a for a in data["annotations"] if not a.get("iscrowd", 0))
    x, y, w, h = ann["bbox"]
    ann["bbox"] = [x, y, x + w + 20, y + h + 20]  # xyxy written as xywh
    path = write_json(tmp_path, data)
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
    data = load_json()
    del data["images"][3]["height"]
    with pytest.raises(ValueError, match=r"Entry 3 of 'images'.*lacks \['height'\]"):
        CocoDataset(write_json(tmp_path, data), str(IMAGE_DIR))
    data = load_json()
    del data["categories"][1]["id"]
    with pytest.raises(ValueError, match=r"Entry 1 of 'categories'.*has no id"):
        CocoDataset(write_json(tmp_path, data), str(IMAGE_DIR))
