"""The recipe of a training run, written beside its results and checked on resume.

`keras_solov2.training.train` (`keras-solov2 train`) writes `recipe.json` in
its output folder before the first step, as Ultralytics writes `args.yaml`
and detectron2 `config.yaml`: the model, the training scales and canvas,
the schedule, learning rate, warm-up, batch, epochs and steps, the data, the
seed, and the versions it ran with. Every value is the one the run used
(defaults resolved), so two runs with equal recipes train the same model.

`--resume` continues a run only with its own recipe: resuming with another
one would mix two schedules in one set of weights. `check_resume` names
each difference by the flag that sets it.
"""

import json
import os

import keras

from keras_solov2.version import __version__

RECIPE_FILE = "recipe.json"

# The recipe's keys that define the run, with the `keras-solov2 train` flag
# (or argument) that sets each. The other keys are recorded only: the
# versions, and what follows from these (the canvas, the decay steps).
FLAGS = {
    "model": "--model",
    "annotations": "ANNOTATIONS",
    "images": "IMAGES",
    "tfrecords": "--tfrecords",
    "val_annotations": "--val-annotations",
    "val_images": "--val-images",
    "num_classes": "the data's classes",
    "scales": "--scale",
    "schedule": "--schedule",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "steps_per_epoch": "--batch-size or the data",
    "learning_rate": "--lr",
    "warmup_steps": "--warmup-steps",
    "max_instances": "max_instances",
    "seed": "seed",
}


def make_recipe(network, optimizer, scales, canvas, **arguments):
    """The recipe of a `train` run: its arguments, defaults resolved.

    `network` and `optimizer` are the compiled run's; the learning rate,
    warm-up and decay steps are read from the optimizer's schedule.
    """
    schedule = keras.optimizers.schedules.deserialize(
        optimizer.get_config()["learning_rate"]
    ).get_config()

    def path(value):
        return None if value is None else os.path.abspath(value)

    model = arguments["model"]
    return {
        "model": path(model) if os.path.isdir(str(model)) else str(model),
        "annotations": path(arguments["annotations"]),
        "images": path(arguments["images"]),
        "tfrecords": path(arguments["tfrecords"]),
        "val_annotations": path(arguments["val_annotations"]),
        "val_images": path(arguments["val_images"]),
        "num_classes": network.num_classes,
        "scales": [list(s) for s in scales],
        "canvas": list(canvas),
        "schedule": arguments["schedule"],
        "epochs": arguments["epochs"],
        "batch_size": arguments["batch_size"],
        "steps_per_epoch": arguments["steps_per_epoch"],
        "learning_rate": schedule["base_learning_rate"],
        "warmup_steps": schedule["warmup_steps"],
        "lr_decay_steps": list(schedule["milestones"]),
        "max_instances": arguments["max_instances"],
        "seed": arguments["seed"],
        "keras_solov2_version": __version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }


def recipe_path(output: str) -> str:
    return os.path.join(output, RECIPE_FILE)


def write_recipe(output: str, recipe: dict) -> str:
    """Writes `recipe` as `output/recipe.json`; returns its path."""
    path = recipe_path(output)
    with open(path, "w") as f:
        json.dump(recipe, f, indent=2)
        f.write("\n")
    return path


def read_recipe(output: str) -> dict | None:
    """The recipe of the run in `output`, or `None` if it has none."""
    path = recipe_path(output)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_resume(output: str, recipe: dict) -> None:
    """Raises a one-line `ValueError` if the run in `output` had another recipe.

    A run without `recipe.json` (from an earlier version) is not checked.
    """
    saved = read_recipe(output)
    if saved is None:
        return
    differences = [
        f"{FLAGS[key]} ({key}: {_text(saved.get(key))} then, {_text(recipe[key])} now)"
        for key in FLAGS
        if key in recipe and _same_json(saved.get(key)) != _same_json(recipe[key])
    ]
    if differences:
        raise ValueError(
            f"--resume needs the recipe of the run in {output!r} ({RECIPE_FILE}), "
            f"but these differ: {'; '.join(differences)}. Resume with the same "
            "flags, or start a new --output."
        )


def _same_json(value):
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _text(value):
    return json.dumps(value)
