"""Seams a new user broke (issue 22): a truncated JPEG in a fresh interpreter.

A script or `keras-solov2 train` whose input pipeline meets it exits every
time (it used to hang at interpreter exit), with one line that names the
file, or counts it with `--on-invalid skip`. The cases that run
`keras_solov2.app.cli.main` in this process are in test_cli_seams.py."""

import concurrent.futures
import csv
import os
import re
import subprocess
import sys

import cli_seams_data
import pytest
from cli_seams_data import BAD

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
RUNS = 8  # a 1-in-4 hang survives 8 runs with probability 0.75**8 = 10%
# TensorFlow's C++ log lines (a level and a timestamp, or absl's notice).
TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")
# The module-scoped fixture of cli_seams_data.py: one per test file.
data = cli_seams_data.data


def our_lines(stderr):
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not TF_LOG_LINE.match(line)
    ]


def run_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "keras_solov2", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def repeated(command, runs=RUNS, timeout=120):
    """`runs` runs of `command`, four at a time; a hang fails the test."""

    def one(_):
        try:
            return subprocess.run(
                command, capture_output=True, text=True, env=ENV, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"hung for {timeout} s: {command}")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(runs)))


# ------------------------------------------------------------ 1. the hang
def test_a_script_whose_pipeline_meets_a_truncated_jpeg_exits_every_time(data):
    # Without `coco._release_failed_pipelines` 3 of 4 such runs hung.
    _, annotations, images = data
    script = (
        "import sys\n"
        "from keras_solov2.data import CocoDataset\n"
        "data = CocoDataset(sys.argv[1], sys.argv[2], progress=False)\n"
        "for batch in data.as_tf_dataset(2, image_size=(64, 64), repeat=True):\n"
        "    pass\n"
    )
    command = [sys.executable, "-c", script, annotations, images]
    for result in repeated(command, runs=4):
        assert result.returncode == 1, result.stderr[-2000:]
        assert f"{BAD}' (image id 3)" in result.stderr


def test_train_on_a_truncated_jpeg_ends_with_one_line_every_time(data, tmp_path):
    root, annotations, images = data
    args = ["train", annotations, images, "--model", str(root / "preset"),
            "--scale", "64", "64", "--epochs", "1",
            "--batch-size", "2"]  # fmt: skip
    command = [sys.executable, "-m", "keras_solov2", *args]
    results = repeated([*command, "--output", str(tmp_path / "run")])
    for result in results:
        assert result.returncode == 2, result.stderr[-2000:]
        lines = our_lines(result.stderr)
        assert len(lines) == 1 and "Traceback" not in result.stderr, lines
        assert BAD in lines[0] and "truncated JPEG" in lines[0], lines
        assert "--on-invalid skip" in lines[0], lines


def test_train_on_invalid_skip_counts_the_truncated_jpeg_and_trains(data, tmp_path):
    root, annotations, images = data
    args = ["train", annotations, images, "--model", str(root / "preset"),
            "--scale", "64", "64", "--epochs", "1",
            "--batch-size", "2"]  # fmt: skip
    skipped = run_cli(*args, "--warmup-steps", "1", "--on-invalid", "skip",
                      "--output", str(tmp_path / "skip"), timeout=300)  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    warning = [line for line in our_lines(skipped.stderr) if BAD in line]
    assert len(warning) == 1 and "'unreadable_image': 1" in warning[0], warning
    assert "1 image(s)" in warning[0]
    with open(tmp_path / "skip" / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1  # 4 images, batch 2: trained
