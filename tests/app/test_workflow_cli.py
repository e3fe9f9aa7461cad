"""The `keras-solov2` console script: train (AP per epoch, resume), evaluate,
predict, and one-line user errors. Runs the installed script in subprocesses
on tiny shapes data and a tiny preset directory."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

import keras_solov2
from keras_solov2.data import generate_shapes_dataset

SCRIPT = shutil.which("keras-solov2", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(
    SCRIPT is None, reason="the keras-solov2 console script is not installed"
)
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}


def cli(*args, timeout=900):
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    splits = {}
    for name, count, seed in (("train", 120, 0), ("val", 4, 1)):
        ann = generate_shapes_dataset(
            str(root / name), count, image_size=(64, 64), seed=seed, max_shapes=2
        )
        splits[name] = (ann, str(root / name / "images"))
    model = tiny_model(
        num_classes=4, class_names=["circle", "triangle", "square", "star"]
    )
    model.save_to_preset(str(root / "tiny_preset"))
    return root, splits


def train_args(root, splits, output, epochs):
    return [
        "train",
        *splits["train"],
        "--output",
        str(output),
        "--val-annotations",
        splits["val"][0],
        "--val-images",
        splits["val"][1],
        "--model",
        str(root / "tiny_preset"),
        "--epochs",
        str(epochs),
        "--batch-size",
        "2",
        "--scale",
        "64",
        "64",
        "--warmup-steps",
        "5",
    ]


def csv_epochs(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_train_writes_every_file_and_logs_mask_ap(workspace):
    root, splits = workspace
    output = root / "run"
    result = cli(*train_args(root, splits, output, 2))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("results.csv", "results.png", "predictions.png"):
        assert (output / name).stat().st_size > 0, name
    assert list((output / "logs").rglob("events.out.tfevents*")), "no TensorBoard log"
    with open(output / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for key in ("val_mask_ap", "val_mask_ap50", "val_box_ap", "loss", "mask_loss"):
        assert key in rows[0], key
        assert 0.0 <= float(rows[-1][key]) or key.endswith("loss")
    for preset in ("best", "last"):
        loaded = keras_solov2.SOLOv2.from_preset(str(output / preset))
        assert loaded.num_classes == 4
        assert loaded.class_names == ["circle", "triangle", "square", "star"]
    with open(output / "last" / "metadata.json") as f:
        assert json.load(f)["epoch"] == 2
    # A second train into the same folder without --resume is refused.
    again = cli(*train_args(root, splits, output, 2))
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.slow  # a second training run: kept out of the default suite
def test_train_from_tfrecord_shards(workspace):
    root, splits = workspace
    prefix = str(root / "shards" / "train")
    written = cli("data", "to-tfrecord", *splits["train"], "--output", prefix,
                  "--shards", "2")  # fmt: skip
    assert written.returncode == 0, written.stderr[-3000:]
    output = root / "from_shards"
    result = cli(
        "train", "--tfrecords", prefix, "--output", str(output),
        "--model", str(root / "tiny_preset"), "--epochs", "1", "--batch-size", "2",
        "--scale", "64", "64", "--warmup-steps", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert csv_epochs(output / "results.csv") == [0]
    loaded = keras_solov2.SOLOv2.from_preset(str(output / "last"))
    assert loaded.class_names == ["circle", "triangle", "square", "star"]
    assert loaded.category_ids == [1, 2, 3, 4]
    missing = cli("train", "--tfrecords", str(root / "nope"), "--output",
                  str(root / "x"))  # fmt: skip
    assert missing.returncode == 2
    assert_one_error_line(missing.stderr, "nope.meta.json")


@pytest.mark.slow  # three training runs: kept out of the 20-minute default suite
def test_resume_after_sigkill_in_epoch_2_does_not_repeat_epoch_1(workspace):
    root, splits = workspace
    output = root / "killed"
    process = subprocess.Popen(
        [SCRIPT, *train_args(root, splits, output, 3)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    results = output / "results.csv"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and csv_epochs(results) == [0]:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert csv_epochs(results) == [0], "the kill must land in epoch 2"
    first_run = process.stdout.read()
    assert "Epoch 1/3" in first_run

    resumed = cli(*train_args(root, splits, output, 3), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 1/3" not in resumed.stdout, "epoch 1 was repeated"
    assert "Epoch 2/3" in resumed.stdout
    assert csv_epochs(results) == [0, 1, 2]
    with open(output / "backup" / "training_metadata.json") as f:
        assert json.load(f)["epoch"] == 3
    # The optimizer state came back with the weights: its step counter (what
    # the learning-rate schedule reads) went on from epoch 1's 60 steps, so
    # it ends at 3 x 60, not 2 x 60.
    import h5py

    with h5py.File(output / "backup" / "latest.weights.h5") as weights:
        assert int(weights["optimizer/vars/0"][()]) == 3 * 60


def test_evaluate_writes_loadable_results_and_prints_their_ap(workspace):
    root, splits = workspace
    preset = str(root / "tiny_preset")
    output = root / "eval"
    model = keras_solov2.SOLOv2.from_preset(preset)
    model.score_threshold = 0.0  # a random model: keep low scores too
    model.filter_threshold = 0.0
    model.save(str(root / "low.keras"))
    result = cli(
        "evaluate", str(root / "low.keras"), *splits["val"], "--output", str(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output / "results.json") as f:
        results = json.load(f)
    assert results, "a zero threshold keeps detections"
    gt = COCO(splits["val"][0])
    from pycocotools.cocoeval import COCOeval

    evaluator = COCOeval(gt, gt.loadRes(str(output / "results.json")), "segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    mask_line = next(
        line for line in result.stdout.splitlines() if line.startswith("mask")
    )
    assert float(mask_line.split()[1]) == pytest.approx(evaluator.stats[0], abs=5e-4)
    assert {r["category_id"] for r in results} <= set(gt.getCatIds())
    with open(output / "per_class_ap.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (output / "pr_curve.png").stat().st_size > 0


def test_predict_writes_json_whose_rle_masks_are_model_predicts(workspace):
    root, splits = workspace
    model = keras_solov2.SOLOv2.from_preset(str(root / "tiny_preset"))
    model.score_threshold = 0.0
    model.filter_threshold = 0.0
    keras_file = str(root / "predict.keras")
    model.save(keras_file)
    folder = splits["val"][1]
    output = root / "predicted"
    result = cli(
        "predict",
        keras_file,
        folder,
        "--output",
        str(output),
        "--score-threshold",
        "0.0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(os.listdir(folder))
    for name in names:
        stem = os.path.splitext(name)[0]
        with open(output / f"{stem}.json") as f:
            record = json.load(f)
        image = np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"))
        expected = model.predict(image[None], verbose=0)
        n = int(expected["num_detections"][0])
        assert len(record["detections"]) == n > 0
        for i, det in enumerate(record["detections"]):
            mask = mask_util.decode(det["segmentation"]).astype(bool)
            np.testing.assert_array_equal(mask, expected["masks"][0, i])
            assert det["label"] == int(expected["labels"][0, i])
            assert det["class_name"] == model.class_names[det["label"]]
        assert Image.open(output / f"{stem}.png").size == (64, 64)


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["evaluate", "light_r18", "missing.json", ".", "--output", "o"],
            "missing.json",
        ),
        (["predict", "light_r18", "no_such_folder", "--output", "o"], "no_such_folder"),
        (["predict", "not_a_preset", "{images}", "--output", "o"], "not_a_preset"),
    ],
)
def test_user_errors_are_one_line_with_status_2(workspace, tmp_path, args, needle):
    _, splits = workspace
    result = cli(*[a.replace("{images}", splits["val"][1]) for a in args])
    assert result.returncode == 2, result.stderr[-2000:]
    assert_one_error_line(result.stderr, needle)


def assert_one_error_line(stderr, needle):
    """Our message is one line; TensorFlow's C++ log lines at run time (oneDNN
    notes, which start with a log level and a timestamp) are not ours."""
    lines = [
        line
        for line in stderr.splitlines()
        if line.strip() and not TF_LOG_LINE.match(line)
    ]
    assert len(lines) == 1, lines
    assert lines[0].startswith("keras-solov2 ") and needle in lines[0], lines
    assert "Traceback" not in stderr


def test_image_folder_without_the_files_is_a_clear_error(workspace, tmp_path):
    root, splits = workspace
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli(
        *train_args(
            root,
            {**splits, "train": (splits["train"][0], str(empty))},
            tmp_path / "r",
            1,
        )
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "000001.jpg" in lines[0], lines


# Every command and subcommand, with an option its help must list.
# Each command and subcommand, with options its `--help` must document.
COMMANDS = {
    ("train",): (
        "--val-annotations",
        "--resume",
        "--epochs",
        "--lr",
        "--scale",
        "--output",
    ),
    ("evaluate",): ("--on-invalid", "--output"),
    ("predict",): ("--score-threshold", "--output"),
    ("convert",): ("--architecture",),
    ("export",): ("--input-size", "--output"),
    ("data",): ("to-tfrecord",),
    ("data", "to-tfrecord"): ("--shards",),
    ("data", "verify"): ("prefix",),
    ("web",): ("--port",),
}


def test_every_command_has_help(capsys):
    """The script and `python -m keras_solov2` list the commands; each
    command and subcommand's `--help` exits 0 and documents its options (in
    this process: the parser is the script's)."""
    from keras_solov2.app import cli as app_cli

    module = subprocess.run(
        [sys.executable, "-m", "keras_solov2", "--help"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    for result in (cli("--help"), module):
        assert result.returncode == 0, result.stderr[-2000:]
        assert all(name[0] in result.stdout for name in COMMANDS)
    for command, options in COMMANDS.items():
        with pytest.raises(SystemExit) as exit_info:
            app_cli.main([*command, "--help"])
        assert exit_info.value.code == 0, command
        text = capsys.readouterr().out
        for option in options:
            assert option in text, (command, option)


def test_recipe_scales_with_the_batch_and_the_run_length():
    import keras

    from keras_solov2.training import _rescale_schedule

    # 1x recipe: decays at epochs 9 and 11 of 12, rate 0.01 at batch 16.
    optimizer, epochs = keras_solov2.solov2_optimizer(
        steps_per_epoch=10, schedule="1x", batch_size=8
    )
    assert epochs == 12
    rescaled = _rescale_schedule(optimizer, 24 * 10, 12 * 10, None, 500)
    schedule = keras.optimizers.schedules.deserialize(
        rescaled.get_config()["learning_rate"]
    ).get_config()
    assert list(schedule["milestones"]) == [180, 220]  # 9/12 and 11/12 of 240
    assert schedule["base_learning_rate"] == pytest.approx(0.005)  # 0.01 x 8/16
    assert schedule["warmup_steps"] == 80  # a third of the run, not 500
    assert type(rescaled) is type(optimizer)
    chosen = _rescale_schedule(optimizer, 240, 120, 0.02, 50)
    config = chosen.get_config()["learning_rate"]["config"]
    assert config["base_learning_rate"] == 0.02 and config["warmup_steps"] == 50
