"""COCO mask and box AP (`keras_solov2.evaluation.evaluate`), the COCO
results (`predict_to_coco`), the old names and the callback, on a tiny
dataset with sparse category ids."""

import contextlib
import inspect
import io
import json

import numpy as np
import pytest
from coco_results_fixtures import (
    CATEGORY_IDS,
    IMAGE_SIZES,
    INSTANCES,
    GroundTruthModel,
    ShiftedModel,
    coco_ground_truth,
    cocoeval_by_hand,
    encode,
    prediction_for,
    rectangle,
    results_for,
    with_a_truncated_image,
    write_dataset,
)
from PIL import Image
from pycocotools.coco import COCO

import keras_solov2
from keras_solov2.evaluation import STAT_NAMES, evaluate, predict_to_coco
from keras_solov2.evaluation.coco_results import coco_results_of_batch


@pytest.fixture(scope="module")
def coco_gt():
    return coco_ground_truth()


@pytest.fixture
def dataset_on_disk(tmp_path):
    return write_dataset(tmp_path)


def segm_stats(coco_gt, results):
    return evaluate(results, coco_gt, iou_types=("segm",), progress=False)["segm"]


def test_ground_truth_gives_perfect_ap(coco_gt):
    stats = segm_stats(coco_gt, results_for())
    assert list(stats) == list(STAT_NAMES)
    # (AR1 < 1: image 1 holds two instances of one category.)
    for name in ("AP", "AP50", "AP75", "AR10", "AR100"):
        assert stats[name] == pytest.approx(1.0), name


def test_padding_is_ignored():
    prediction = prediction_for(1)
    results = coco_results_of_batch(prediction, [1], CATEGORY_IDS)
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
    first, second = coco_results_of_batch(prediction, [2], CATEGORY_IDS)
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
    wrong = segm_stats(coco_gt, results_for(category_ids=CATEGORY_IDS[::-1]))
    assert wrong["AP"] < 0.5


def test_wrong_labels_give_zero_ap(coco_gt):
    def shift_label(mask, label):
        return mask, (label + 1) % len(CATEGORY_IDS)

    stats = segm_stats(coco_gt, results_for(shift_label))
    assert stats["AP"] == pytest.approx(0.0)


def test_shifted_masks_give_lower_ap(coco_gt):
    def shift(mask, label):
        return np.roll(mask, (4, 5), axis=(0, 1)), label

    stats = segm_stats(coco_gt, results_for(shift))
    assert 0.0 < stats["AP"] < 0.7
    assert stats["AP75"] < stats["AP50"]


def test_empty_results(coco_gt, capsys):
    stats = segm_stats(coco_gt, [])
    assert capsys.readouterr().out == ""
    assert stats["AP"] == 0.0
    assert stats["AR100"] == 0.0
    # pycocotools' convention: no large ground truth here, hence -1.
    assert stats["APl"] == -1.0


def test_verbose_prints_summary(coco_gt, capsys):
    evaluate(results_for(), coco_gt, iou_types=("segm",), progress=True)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in capsys.readouterr().out


def test_evaluate_predicts_with_the_model(dataset_on_disk):
    model = GroundTruthModel()
    report = evaluate(model, *dataset_on_disk, progress=False)
    assert report["segm"]["AP"] == pytest.approx(1.0)
    assert report["bbox"]["AP"] == pytest.approx(1.0)  # boxes of the masks
    assert model.batch_sizes == [1, 1, 1]
    assert [row["category_id"] for row in report["per_class"]] == CATEGORY_IDS
    assert all(row["mask_ap"] == pytest.approx(1.0) for row in report["per_class"])


def test_evaluate_max_images(dataset_on_disk, capsys):
    model = GroundTruthModel()
    stats = evaluate(model, *dataset_on_disk, max_images=2, batch_size=2)["segm"]
    # Only images 1 and 2 (different sizes: one predict call each) are scored.
    assert model.batch_sizes == [1, 1]
    assert stats["AP"] == pytest.approx(1.0)
    assert "Average Precision" in capsys.readouterr().out


def test_predict_to_coco_rejects_wrong_mask_size(dataset_on_disk):
    class Downscaled(GroundTruthModel):
        def predict(self, images, verbose="auto"):
            out = super().predict(images, verbose)
            out["masks"] = out["masks"][:, :, ::2, ::2]
            return out

    with pytest.raises(ValueError, match="original image size"):
        predict_to_coco(Downscaled(), *dataset_on_disk, progress=False)


def test_evaluate_uses_the_model_category_ids(dataset_on_disk):
    def mask_ap(model):
        return evaluate(model, *dataset_on_disk, iou_types=("segm",), progress=False)[
            "segm"
        ]["AP"]

    model = GroundTruthModel()
    model.category_ids = list(CATEGORY_IDS)
    assert mask_ap(model) == 1.0
    model.category_ids = CATEGORY_IDS[1:] + CATEGORY_IDS[:1]  # labels -> wrong ids
    assert mask_ap(model) < 0.5
    model.category_ids = [3, 7, 99]
    with pytest.raises(ValueError, match=r"category_ids \[99\]"):
        mask_ap(model)


def test_predict_to_coco_results_load_and_evaluate_as_pycocotools_does(
    dataset_on_disk, tmp_path
):
    """The API's contract: predict_to_coco's results go through json and
    `COCO.loadRes`, and evaluate's statistics are COCOeval's on them."""
    annotation_file, image_dir = dataset_on_disk
    results = predict_to_coco(
        ShiftedModel(), annotation_file, image_dir, progress=False
    )
    assert {r["image_id"] for r in results} == set(IMAGE_SIZES)
    assert set(results[0]) == {
        "image_id",
        "category_id",
        "segmentation",
        "score",
        "bbox",
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(annotation_file)
        coco_dt = coco_gt.loadRes(str(path))
    assert len(coco_dt.getAnnIds()) == len(results)

    report = evaluate(ShiftedModel(), annotation_file, image_dir, progress=False)
    assert report["results"] == results
    loaded = json.loads(path.read_text())
    # The same numbers from the results, the json read back, or a COCO object.
    for given in (
        evaluate(results, annotation_file, progress=False),
        evaluate(loaded, coco_gt, progress=False),
    ):
        assert given["segm"] == report["segm"] and given["bbox"] == report["bbox"]
    for iou_type in ("segm", "bbox"):
        expected = cocoeval_by_hand(coco_gt, coco_dt, iou_type)
        assert 0.0 < expected["AP"] < 1.0
        assert report[iou_type] == pytest.approx(expected, abs=1e-12), iou_type
    assert [row["num_instances"] for row in report["per_class"]] == [
        sum(c == category_id for _, c, _ in INSTANCES) for category_id in CATEGORY_IDS
    ]


def test_predict_to_coco_takes_arrays_and_a_coco_dataset(dataset_on_disk):
    annotation_file, image_dir = dataset_on_disk
    model = GroundTruthModel()
    model.category_ids = list(CATEGORY_IDS)
    from_json = predict_to_coco(model, annotation_file, image_dir, progress=False)
    dataset = keras_solov2.data.CocoDataset(annotation_file, image_dir)
    assert predict_to_coco(model, dataset, progress=False) == from_json
    images = [
        np.asarray(Image.open(f"{image_dir}/{i:012d}.png")) for i in sorted(IMAGE_SIZES)
    ]
    from_arrays = predict_to_coco(
        model, images, image_ids=sorted(IMAGE_SIZES), progress=False
    )
    assert from_arrays == from_json
    report = evaluate(model, dataset, iou_types=("bbox",), progress=False)
    assert set(report) == {"bbox", "per_class", "pr_curves", "results"}
    assert "mask_ap" not in report["per_class"][0]
    assert report["bbox"]["AP"] == pytest.approx(1.0)


def test_the_evaluation_api():
    """One evaluate, one predict_to_coco (and the callback): what the docs
    name. A change here is a change of the public API."""
    assert keras_solov2.evaluation.__all__ == [
        "STAT_NAMES",
        "draw_instances",
        "evaluate",
        "predict_to_coco",
        "save_ground_truth_grid",
        "save_prediction_grid",
    ]
    common = [
        "batch_size",
        "max_images",
        "progress",
        "apply_exif_orientation",
        "on_invalid",
    ]
    assert list(inspect.signature(evaluate).parameters) == [
        "model",
        "data",
        "image_dir",
        "iou_types",
        *common,
    ]
    assert list(inspect.signature(predict_to_coco).parameters) == [
        "model",
        "data",
        "image_dir",
        "image_ids",
        *common,
    ]
    callback = inspect.signature(keras_solov2.callbacks.CocoEvaluation)
    assert "on_invalid" in callback.parameters


def test_the_old_names_warn_and_give_what_they_gave(dataset_on_disk, coco_gt):
    annotation_file, image_dir = dataset_on_disk
    evaluation = keras_solov2.evaluation
    report = evaluate(ShiftedModel(), annotation_file, image_dir, progress=False)

    def old(name):
        with pytest.warns(DeprecationWarning, match=f"evaluation.{name} is deprecated"):
            return getattr(evaluation, name)

    args = (ShiftedModel(), annotation_file, image_dir)
    assert old("evaluate_model")(*args, progress=False) == report["segm"]
    assert old("coco_evaluation")(*args, progress=False) == report
    gt, results, image_ids = old("predict_coco_results")(*args, progress=False)
    assert results == report["results"] and image_ids == sorted(IMAGE_SIZES)
    assert old("evaluate_results")(gt, results, verbose=False) == report["segm"]
    prediction = prediction_for(2)
    assert old("predictions_to_coco_results")(
        prediction, [2], CATEGORY_IDS
    ) == coco_results_of_batch(prediction, [2], CATEGORY_IDS)
    assert old("load_image") is keras_solov2.io.load_image
    assert old("check_coco_paths") is keras_solov2.io.check_coco_paths
    with pytest.raises(AttributeError):
        evaluation.no_such_name  # noqa: B018


@pytest.mark.filterwarnings("ignore:.*skipped:UserWarning")
def test_the_callback_forwards_on_invalid(dataset_on_disk):
    annotation_file, image_dir = dataset_on_disk
    with_a_truncated_image(annotation_file, image_dir)
    with pytest.raises(ValueError, match="on_invalid"):
        keras_solov2.callbacks.CocoEvaluation(
            annotation_file, image_dir, on_invalid="ignore"
        )
    for on_invalid in ("raise", "skip"):
        callback = keras_solov2.callbacks.CocoEvaluation(
            annotation_file, image_dir, verbose=0, on_invalid=on_invalid
        )
        callback.set_model(GroundTruthModel())
        logs = {}
        if on_invalid == "raise":
            with pytest.raises(ValueError, match="000000000009.png"):
                callback.on_epoch_end(0, logs)
            continue
        callback.on_epoch_end(0, logs)
        # Image 9 is left out of the ground truth, not counted as a miss.
        assert logs["val_mask_ap"] == pytest.approx(1.0)
        assert logs["val_box_ap"] == pytest.approx(1.0)
        assert callback.last_report["segm"]["AP"] == logs["val_mask_ap"]
