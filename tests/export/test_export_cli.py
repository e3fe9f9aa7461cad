"""Export: `keras-solov2 export` and the desktop example
(examples/tflite_predict.py) against Keras."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tflite_files  # noqa: F401  (skips this file without ai-edge-litert)
from detection_match import match_detections
from helpers import REPO

from keras_solov2 import export

pytestmark = pytest.mark.tflite


# ------------------------------------------------ the CLI and the example
def test_cli_export_and_the_desktop_example_agree_with_keras(model, tmp_path):
    from PIL import Image

    from keras_solov2.app import cli

    keras_file = str(tmp_path / "tiny.keras")
    model.save(keras_file)
    path = str(tmp_path / "tiny.tflite")
    cli.main(
        [
            "export",
            keras_file,
            "--format",
            "tflite",
            "--output",
            path,
            "--image-size",
            "64",
            "96",
        ]
    )
    with open(tmp_path / "tiny.tflite.json") as f:
        metadata = json.load(f)
    assert metadata["input"]["shape"] == [1, 64, 96, 3]
    assert metadata["outputs"] == list(export.OUTPUT_NAMES)
    assert metadata["class_names"] == model.class_names

    # An image of exactly the input size: the letterbox is the identity.
    image = np.random.default_rng(3).integers(0, 256, (64, 96, 3)).astype("uint8")
    image_file = str(tmp_path / "image.png")
    Image.fromarray(image).save(image_file)
    png = str(tmp_path / "masks.png")
    script = os.path.join(REPO, "examples", "tflite_predict.py")
    check = (
        "import runpy, sys\n"
        f"sys.argv = ['tflite_predict.py', {path!r}, {image_file!r}, "
        f"'--output', {png!r}]\n"
        "try:\n"
        f"    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules, 'the example imported TensorFlow'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = model.predict(image[None], verbose=0)
    n = int(expected["num_detections"][0])
    assert f"{n} detections" in result.stdout
    assert Image.open(png).size == (96, 64)

    sys.path.insert(0, os.path.dirname(script))
    try:
        import tflite_predict
    finally:
        sys.path.pop(0)
    detections, _ = tflite_predict.predict(path, Image.open(image_file))
    got = {
        "num_detections": [len(detections)],
        "labels": np.asarray([[d["label"] for d in detections]]),
        "scores": np.asarray([[d["score"] for d in detections]]),
        "masks": np.stack([d["mask"] for d in detections])[None],
    }
    match = match_detections(expected, got)
    # Pillow's bilinear resize against TensorFlow's: a few edge pixels.
    assert np.median(match["ious"]) >= 0.95, match
    assert match["score_diffs"].max() <= 1e-3
    # Boxes of the stride-4 masks: each holds Keras's exact box, within a
    # stride (a pixel set after the upsampling has a cell above the
    # threshold), and most are within a stride of it, except where a random
    # mask has isolated cells that the upsampling loses. Each detection
    # against Keras's of the same label and nearest score (after other
    # sizes, Keras's relaxed trace may swap near-tied slots).
    boxes = np.asarray([d["box"] for d in detections])
    same = (
        np.asarray([d["label"] for d in detections])[:, None]
        == (expected["labels"][0, :n][None])
    )
    gaps = np.abs(got["scores"][0][:, None] - expected["scores"][0, :n][None])
    nearest = np.argmin(np.where(same, gaps, np.inf), axis=1)
    exact = expected["boxes"][0, nearest]
    assert np.all(boxes[:, :2] <= exact[:, :2] + 4.5), (boxes, exact)
    assert np.all(boxes[:, 2:] >= exact[:, 2:] - 4.5), (boxes, exact)
    close = np.abs(boxes - exact) <= 4.5
    assert close.mean() >= 0.95, close.mean()


def test_cli_export_refuses_unknown_models_and_misplaced_options(tmp_path, capsys):
    from keras_solov2.app import cli

    assert (
        cli.main(["export", "nope", "--format", "tflite", "--output", "x.tflite"]) == 2
    )
    assert "neither a preset directory" in capsys.readouterr().err
    misplaced = ["export", "light_r18", "--format", "saved_model", "--output",
                 str(tmp_path / "s"), "--quantization", "float16"]  # fmt: skip
    assert cli.main(misplaced) == 2
    assert "tflite only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tflite only"):
        cli.main(["--verbose", *misplaced])
