"""`keras_solov2.evaluation.evaluate` with a real SOLOv2 on the bundled COCO
images, against `model.predict` and pycocotools by hand."""

import contextlib
import io
import json

import keras
import numpy as np
import pytest
from coco_results_fixtures import cocoeval_by_hand
from helpers import FIXTURES
from PIL import Image, ImageOps
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

import keras_solov2
from keras_solov2.evaluation import STAT_NAMES, evaluate, predict_to_coco
from keras_solov2.models.solov2 import solov2_presets

COCO_MINI = FIXTURES / "coco_mini"
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


def test_evaluate_with_a_real_solov2(small_solov2, tmp_path):
    """evaluate's numbers against model.predict + pycocotools by hand.

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
    expected = cocoeval_by_hand(coco_gt, coco_gt.loadRes([dict(r) for r in results]))
    assert 0.0 < expected["AP"] < 1.0

    images = str(COCO_MINI / "val2017")
    report = evaluate(small_solov2, str(annotation_file), images, progress=False)
    for name in STAT_NAMES:
        assert report["segm"][name] == pytest.approx(expected[name], abs=1e-9), name
    # predict_to_coco gives the results that evaluate scored.
    predicted = predict_to_coco(
        small_solov2, str(annotation_file), images, progress=False
    )
    assert predicted == report["results"]
    # With low-resolution masks, evaluation pastes them: the same numbers.
    small_solov2.mask_resolution = "features"
    pasted = evaluate(small_solov2, str(annotation_file), images, progress=False)
    small_solov2.mask_resolution = "original"
    assert pasted["segm"] == report["segm"] and pasted["bbox"] == report["bbox"]
