"""`train` writes its recipe beside its results; `--resume` checks it."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import tiny_model

import keras_solov2
from keras_solov2.data import generate_shapes_dataset
from keras_solov2.training import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished one-epoch run on 4 shapes images: (root, kwargs, output)."""
    root = tmp_path_factory.mktemp("recipe")
    annotations = generate_shapes_dataset(
        str(root / "train"), 4, image_size=(64, 64), seed=0, max_shapes=2
    )
    tiny_model(num_classes=4).save_to_preset(str(root / "tiny_preset"))
    kwargs = dict(
        annotations=annotations,
        images=str(root / "train" / "images"),
        model=str(root / "tiny_preset"),
        epochs=1,
        batch_size=2,
        scale=(64, 64),
        warmup_steps=5,
        verbose=0,
    )
    output = str(root / "run")
    train(output=output, **kwargs)
    return root, kwargs, output


def test_the_recipe_holds_every_setting_with_defaults_resolved(run):
    root, kwargs, output = run
    with open(os.path.join(output, "recipe.json")) as f:
        recipe = json.load(f)
    assert recipe["model"] == str(root / "tiny_preset")
    assert recipe["annotations"] == kwargs["annotations"]
    assert recipe["images"] == str(root / "train" / "images")
    assert recipe["tfrecords"] is None and recipe["val_annotations"] is None
    assert recipe["num_classes"] == 4
    assert recipe["scales"] == [[64, 64]] and recipe["canvas"] == [64, 64]
    assert recipe["schedule"] == "1x"  # the default
    assert recipe["epochs"] == 1 and recipe["batch_size"] == 2
    assert recipe["steps_per_epoch"] == 2  # 4 images, batch 2
    assert recipe["learning_rate"] == pytest.approx(0.01 * 2 / 16)
    assert recipe["warmup_steps"] == 1  # capped at a third of the 2 steps
    assert recipe["lr_decay_steps"] == [2, 2]  # epochs 9 and 11 of 12, of 2 steps
    assert recipe["max_instances"] == 100 and recipe["seed"] == 0
    assert recipe["keras_solov2_version"] == keras_solov2.__version__


def test_resume_with_another_recipe_is_one_line_naming_the_flags(run):
    _, kwargs, output = run
    with open(os.path.join(output, "recipe.json")) as f:
        before = f.read()
    changed = {**kwargs, "batch_size": 1, "schedule": "3x"}
    with pytest.raises(ValueError) as error:
        train(output=output, resume=True, **changed)
    message = str(error.value)
    assert "\n" not in message
    assert "--batch-size (batch_size: 2 then, 1 now)" in message
    assert '--schedule (schedule: "1x" then, "3x" now)' in message
    assert "--lr" in message  # 0.01 x batch / 16 changed with the batch
    assert "--scale" not in message and "--model" not in message
    with open(os.path.join(output, "recipe.json")) as f:
        assert f.read() == before  # the run's record is kept


def test_resume_with_the_same_recipe_goes_on(run):
    _, kwargs, output = run
    train(output=output, resume=True, **kwargs)  # the one epoch is done
    with open(os.path.join(output, "recipe.json")) as f:
        assert json.load(f)["batch_size"] == 2


def test_cli_resume_with_another_recipe_exits_2(run):
    root, kwargs, output = run
    script = shutil.which("keras-solov2", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the keras-solov2 console script is not installed")
    result = subprocess.run(
        [script, "train", kwargs["annotations"], kwargs["images"],
         "--output", output, "--model", kwargs["model"], "--epochs", "1",
         "--batch-size", "2", "--scale", "64", "64", "--warmup-steps", "5",
         "--schedule", "3x", "--resume"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    ours = [line for line in result.stderr.splitlines() if "keras-solov2" in line]
    assert len(ours) == 1 and "--schedule" in ours[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
