"""COCO mask AP on a tiny in-memory dataset and with a real SOLOv2 on the bundled
COCO images, and the visualisation helpers."""

import contextlib
import io
import json
import pathlib

import keras
import numpy as np
import pytest
from PIL import Image, ImageOps
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import keras_solov2
from keras_solov2.evaluation import (
    STAT_NAMES,
    draw_instances,
    evaluate_model,
    evaluate_results,
    predictions_to_coco_results,
    save_prediction_grid,
)
from keras_solov2.models import solov2_presets

# Sparse category ids, listed out of order on purpose.
CATEGORIES = [
    {"id": 12, "name": "ring"},
    {"id": 3, "name": "box"},
    {"id": 7, "name": "dot"},
]
CATEGORY_IDS = sorted(c["id"] for c in CATEGORIES)  # contiguous label i -> id
IMAGE_SIZES = {1: (64, 80), 2: (48, 48), 5: (100, 60)}  # id -> (height, width)


def rectangle(size, y0, x0, y1, x1):
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def circle(size, cy, cx, radius):
    yy, xx = np.mgrid[: size[0], : size[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


# (image id, category id, mask) of every ground-truth instance.
INSTANCES = [
    (1, 3, rectangle(IMAGE_SIZES[1], 5, 5, 30, 40)),
    (1, 7, circle(IMAGE_SIZES[1], 45, 60, 12)),
    (1, 3, rectangle(IMAGE_SIZES[1], 40, 2, 60, 25)),
    (2, 12, circle(IMAGE_SIZES[2], 24, 24, 15)),
    (2, 7, rectangle(IMAGE_SIZES[2], 2, 2, 10, 12)),
    (5, 12, rectangle(IMAGE_SIZES[5], 10, 10, 90, 50)),
    (5, 3, circle(IMAGE_SIZES[5], 30, 30, 9)),
]


def encode(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def ground_truth_dataset():
    images = [
        {"id": i, "height": h, "width": w, "file_name": f"{i:012d}.png"}
        for i, (h, w) in IMAGE_SIZES.items()
    ]
    annotations = []
    for ann_id, (image_id, category_id, mask) in enumerate(INSTANCES, start=1):
        rle = encode(mask)
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle,
                "area": float(mask.sum()),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


@pytest.fixture(scope="module")
def coco_gt():
    coco = COCO()
    coco.dataset = ground_truth_dataset()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def prediction_for(image_id, transform=None, num_padding=2):
    """A batch-of-one prediction dict holding the ground truth of an image.

    `transform(mask, label) -> (mask, label)` alters each instance. Padding
    follows the real entries: `num_padding` garbage entries labelled -1
    inside `num_detections`, then one valid-looking entry after it.
    """
    size = IMAGE_SIZES[image_id]
    rng = np.random.default_rng(image_id)
    masks, labels, scores = [], [], []
    for i, (img, category_id, mask) in enumerate(INSTANCES):
        if img != image_id:
            continue
        label = CATEGORY_IDS.index(category_id)
        if transform is not None:
            mask, label = transform(mask, label)
        masks.append(mask)
        labels.append(label)
        scores.append(0.9 - 0.01 * i)
    num = len(masks) + num_padding
    for _ in range(num_padding):
        masks.append(rng.random(size) > 0.5)
        labels.append(-1)
        scores.append(0.99)
    # Beyond num_detections: must be ignored even though its label is valid.
    masks.append(np.ones(size, bool))
    labels.append(0)
    scores.append(0.95)
    return {
        "masks": np.stack(masks)[None].astype(np.uint8),
        "labels": np.array([labels], np.int32),
        "scores": np.array([scores], np.float32),
        "boxes": np.zeros((1, len(labels), 4), np.float32),
        "num_detections": np.array([num], np.int32),
    }


def results_for(transform=None, category_ids=CATEGORY_IDS):
    results = []
    for image_id in IMAGE_SIZES:
        prediction = prediction_for(image_id, transform)
        results += predictions_to_coco_results(prediction, [image_id], category_ids)
    return results


def evaluate(coco_gt, results):
    return evaluate_results(coco_gt, results, verbose=False)


def test_ground_truth_gives_perfect_ap(coco_gt):
    stats = evaluate(coco_gt, results_for())
    assert list(stats) == list(STAT_NAMES)
    # (AR1 < 1: image 1 holds two instances of one category.)
    for name in ("AP", "AP50", "AP75", "AR10", "AR100"):
        assert stats[name] == pytest.approx(1.0), name


def test_padding_is_ignored():
    prediction = prediction_for(1)
    results = predictions_to_coco_results(prediction, [1], CATEGORY_IDS)
    expected = [(c, m) for i, c, m in INSTANCES if i == 1]
    assert len(results) == len(expected)
    for result, (category_id, mask) in zip(results, expected, strict=True):
        assert result["category_id"] == category_id
        assert result["segmentation"] == encode(mask)


def test_result_format():
    box = np.array([[[4.0, 5.0, 24.0, 15.0]]], np.float32)
    mask = rectangle(IMAGE_SIZES[2], 2, 2, 10, 12)
    prediction = {
        "masks": np.stack([mask, mask])[None],
        "labels": np.array([[2, 0]], np.int32),
        "scores": np.array([[0.5, 0.25]], np.float32),
        "boxes": np.concatenate([box, np.zeros((1, 1, 4), np.float32)], axis=1),
        "num_detections": np.array([2], np.int32),
    }
    first, second = predictions_to_coco_results(prediction, [2], CATEGORY_IDS)
    assert first["image_id"] == 2 and isinstance(first["image_id"], int)
    assert first["category_id"] == CATEGORY_IDS[2] == 12
    assert second["category_id"] == CATEGORY_IDS[0] == 3
    assert first["score"] == pytest.approx(0.5)
    assert first["bbox"] == [4.0, 5.0, 20.0, 10.0]  # xyxy -> xywh
    assert second["bbox"] == [2.0, 2.0, 10.0, 8.0]  # zero box -> box of the mask
    assert isinstance(first["segmentation"]["counts"], str)
    assert first["segmentation"]["size"] == list(IMAGE_SIZES[2])
    json.dumps([first, second])  # JSON-serialisable


def test_category_mapping(coco_gt):
    """Labels map through `category_ids`; a wrong mapping destroys the AP."""
    results = results_for()
    gt_categories = sorted((i, c) for i, c, _ in INSTANCES)
    assert sorted((r["image_id"], r["category_id"]) for r in results) == gt_categories
    wrong = evaluate(coco_gt, results_for(category_ids=CATEGORY_IDS[::-1]))
    assert wrong["AP"] < 0.5


def test_wrong_labels_give_zero_ap(coco_gt):
    def shift_label(mask, label):
        return mask, (label + 1) % len(CATEGORY_IDS)

    stats = evaluate(coco_gt, results_for(shift_label))
    assert stats["AP"] == pytest.approx(0.0)


def test_shifted_masks_give_lower_ap(coco_gt):
    def shift(mask, label):
        return np.roll(mask, (4, 5), axis=(0, 1)), label

    stats = evaluate(coco_gt, results_for(shift))
    assert 0.0 < stats["AP"] < 0.7
    assert stats["AP75"] < stats["AP50"]


def test_empty_results(coco_gt, capsys):
    stats = evaluate_results(coco_gt, [], verbose=False)
    assert capsys.readouterr().out == ""
    assert stats["AP"] == 0.0
    assert stats["AR100"] == 0.0
    # pycocotools' convention: no large ground truth here, hence -1.
    assert stats["APl"] == -1.0


def test_verbose_prints_summary(coco_gt, capsys):
    evaluate_results(coco_gt, results_for(), verbose=True)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in capsys.readouterr().out


class GroundTruthModel:
    """Stands in for SOLOv2: finds the image by a marker pixel, returns its GT."""

    def __init__(self):
        self.batch_sizes = []

    def predict(self, images, verbose="auto"):
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
        self.batch_sizes.append(len(images))
        outputs = [prediction_for(int(image[0, 0, 0])) for image in images]
        # The same number of slots per image, so that they can be stacked.
        slots = max(o["labels"].shape[1] for o in outputs)
        batch = {}
        for key, fill in [("masks", 0), ("labels", -1), ("scores", 0), ("boxes", 0)]:
            padded = []
            for o in outputs:
                pad = [(0, 0)] * o[key].ndim
                pad[1] = (0, slots - o[key].shape[1])
                padded.append(np.pad(o[key], pad, constant_values=fill))
            batch[key] = np.concatenate(padded)
        batch["num_detections"] = np.concatenate([o["num_detections"] for o in outputs])
        return batch


@pytest.fixture
def dataset_on_disk(tmp_path):
    dataset = ground_truth_dataset()
    for info in dataset["images"]:
        pixels = np.full((info["height"], info["width"], 3), 128, np.uint8)
        pixels[0, 0] = info["id"]  # marker read by GroundTruthModel
        Image.fromarray(pixels).save(tmp_path / info["file_name"])
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(dataset))
    return str(annotation_file), str(tmp_path)


def test_evaluate_model(dataset_on_disk):
    model = GroundTruthModel()
    stats = evaluate_model(model, *dataset_on_disk, progress=False)
    assert stats["AP"] == pytest.approx(1.0)
    assert model.batch_sizes == [1, 1, 1]


def test_evaluate_model_max_images(dataset_on_disk, capsys):
    model = GroundTruthModel()
    stats = evaluate_model(model, *dataset_on_disk, max_images=2, batch_size=2)
    # Only images 1 and 2 (different sizes: one predict call each) are scored.
    assert model.batch_sizes == [1, 1]
    assert stats["AP"] == pytest.approx(1.0)
    assert "Average Precision" in capsys.readouterr().out


def test_evaluate_model_rejects_wrong_mask_size(dataset_on_disk):
    class Downscaled(GroundTruthModel):
        def predict(self, images, verbose="auto"):
            out = super().predict(images, verbose)
            out["masks"] = out["masks"][:, :, ::2, ::2]
            return out

    with pytest.raises(ValueError, match="original image size"):
        evaluate_model(Downscaled(), *dataset_on_disk, progress=False)


def test_draw_instances():
    image = np.full((40, 50, 3), 100, np.uint8)
    masks = np.stack(
        [
            rectangle((40, 50), 10, 10, 30, 30),
            rectangle((40, 50), 0, 35, 10, 50),  # padding: not drawn
            rectangle((40, 50), 30, 35, 40, 50),  # low score: not drawn
        ]
    )
    drawn = draw_instances(
        image, masks, [1, -1, 0], [0.9, 0.99, 0.1], class_names=["a", "b"]
    )
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert not np.array_equal(drawn[25, 25], image[25, 25])  # inside the mask
    assert np.array_equal(drawn[20, 45], image[20, 45])  # outside every mask
    assert np.array_equal(drawn[5, 45], image[5, 45])  # padding instance
    assert np.array_equal(drawn[35, 45], image[35, 45])  # below the threshold
    assert np.array_equal(image, np.full((40, 50, 3), 100, np.uint8))  # no in-place


def test_save_prediction_grid(tmp_path):
    images = [np.full(IMAGE_SIZES[i] + (3,), 90, np.uint8) for i in (1, 2)]
    predictions = [
        {key: value[0] for key, value in prediction_for(i).items()} for i in (1, 2)
    ]
    path = tmp_path / "grid.png"
    grid = save_prediction_grid(images, predictions, str(path), columns=2, padding=2)
    with Image.open(path) as saved:
        assert saved.size == (grid.shape[1], grid.shape[0])
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), grid)
    assert grid.shape == (64 + 2 * 2, 2 * 80 + 3 * 2, 3)  # cells of the largest size
    # Batched form, as returned by predict for same-sized images.
    batched = GroundTruthModel().predict(
        np.stack([np.full((48, 48, 3), i, np.uint8) for i in (2, 2)])
    )
    grid = save_prediction_grid(
        [np.zeros((48, 48, 3), np.uint8)] * 2, batched, str(path)
    )
    assert grid.dtype == np.uint8


def test_evaluate_model_uses_the_model_category_ids(dataset_on_disk):
    model = GroundTruthModel()
    model.category_ids = list(CATEGORY_IDS)
    assert evaluate_model(model, *dataset_on_disk, progress=False)["AP"] == 1.0
    model.category_ids = CATEGORY_IDS[1:] + CATEGORY_IDS[:1]  # labels -> wrong ids
    assert evaluate_model(model, *dataset_on_disk, progress=False)["AP"] < 0.5
    model.category_ids = [3, 7, 99]
    with pytest.raises(ValueError, match=r"category_ids \[99\]"):
        evaluate_model(model, *dataset_on_disk, progress=False)


def test_load_image_applies_exif_orientation(tmp_path):
    from keras_solov2.io import load_image

    shown = np.zeros((40, 60, 3), np.uint8)
    shown[:10, :30] = 255  # bright top-left block, as displayed
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1))).save(
        tmp_path / "p.jpg", quality=95, exif=exif.tobytes()
    )
    image = load_image(tmp_path / "p.jpg")
    assert image.shape == (40, 60, 3)
    assert np.abs(image.astype(float) - shown).mean() < 4
    assert load_image(tmp_path / "p.jpg", apply_exif_orientation=False).shape == (
        60,
        40,
        3,
    )


# ---------------------------------------------------------------- real model
COCO_MINI = pathlib.Path(__file__).parent / "fixtures" / "coco_mini"
COCO_MINI_JSON = COCO_MINI / "annotations" / "instances_val2017.json"
# A label order that is not the json's ascending id order, so that a mapping
# through the json's ids instead of the model's `category_ids` shows.
REVERSED_IDS = solov2_presets.COCO_CATEGORY_IDS[::-1]
REVERSED_NAMES = solov2_presets.COCO_CLASS_NAMES[::-1]


@pytest.fixture(scope="module")
def small_solov2():
    """A random light-R18-layout SOLOv2, slimmed down, that keeps everything."""
    keras.utils.set_random_seed(0)
    return keras_solov2.SOLOv2.from_preset(
        "light_r18",
        load_weights=False,
        num_classes=80,
        class_names=REVERSED_NAMES,
        category_ids=REVERSED_IDS,
        score_threshold=0.0,
        filter_threshold=0.0,
        test_scale=(320, 192),
        stage_blocks=(1, 1, 1, 1),
        base_channels=16,
        fpn_channels=32,
        head_channels=32,
        stacked_convs=1,
        kernel_channels=16,
        mask_feature_channels=16,
        num_groups=8,
    )


def own_results(model, images):
    """COCO results straight from `model.predict`, one image at a time."""
    results = []
    for info in sorted(images, key=lambda i: i["id"]):
        with Image.open(COCO_MINI / "val2017" / info["file_name"]) as image:
            pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        out = model.predict(pixels[None], verbose=0)
        num = int(out["num_detections"][0])
        assert num > 0, info["file_name"]
        for d in range(num):
            label = int(out["labels"][0, d])
            if label < 0:
                continue
            mask = np.asfortranarray(np.asarray(out["masks"][0, d], np.uint8))
            assert mask.shape == (info["height"], info["width"])
            rle = mask_util.encode(mask)
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {
                    "image_id": info["id"],
                    "category_id": REVERSED_IDS[label],
                    "segmentation": rle,
                    "score": float(out["scores"][0, d]),
                    "area": int(mask.sum()),
                }
            )
    return results


def test_evaluate_model_with_a_real_solov2(small_solov2, tmp_path):
    """evaluate_model's numbers against model.predict + pycocotools by hand.

    The ground truth is the real COCO annotations of the bundled images plus
    the two best non-empty predicted masks of each image, so that the AP is
    neither 0 nor 1 and depends on every mask, score, label and image id.
    """
    with open(COCO_MINI_JSON) as f:
        dataset = json.load(f)
    results = own_results(small_solov2, dataset["images"])
    assert len(results) > 0 and sum(r["area"] > 0 for r in results) > 0
    next_id = max(a["id"] for a in dataset["annotations"]) + 1
    for info in dataset["images"]:
        mine = [r for r in results if r["image_id"] == info["id"] and r["area"] > 0]
        for r in sorted(mine, key=lambda r: -r["score"])[:2]:
            dataset["annotations"].append(
                {
                    "id": next_id,
                    "image_id": info["id"],
                    "category_id": r["category_id"],
                    "segmentation": r["segmentation"],
                    "area": float(r["area"]),
                    "bbox": [float(v) for v in mask_util.toBbox(r["segmentation"])],
                    "iscrowd": 0,
                }
            )
            next_id += 1
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(dataset))

    coco_gt = COCO()
    coco_gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        evaluator = COCOeval(
            coco_gt, coco_gt.loadRes([dict(r) for r in results]), iouType="segm"
        )
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = dict(zip(STAT_NAMES, (float(v) for v in evaluator.stats), strict=True))
    assert 0.0 < expected["AP"] < 1.0

    stats = evaluate_model(
        small_solov2, str(annotation_file), str(COCO_MINI / "val2017"), progress=False
    )
    for name in STAT_NAMES:
        assert stats[name] == pytest.approx(expected[name], abs=1e-9), name
    # With low-resolution masks, evaluation pastes them: the same numbers.
    small_solov2.mask_resolution = "features"
    pasted = evaluate_model(
        small_solov2, str(annotation_file), str(COCO_MINI / "val2017"), progress=False
    )
    small_solov2.mask_resolution = "original"
    assert pasted == stats
