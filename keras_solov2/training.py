"""Training from a COCO-format dataset to a preset directory, with resume.

`train(...)` is what `keras-solov2 train` runs: the same function from
Python. It reads the classes from the data, builds the model, compiles the
official recipe (SGD with the learning rate scaled to the batch, warm-up and
step decay), and fits with Keras' progress bar and these callbacks, in this
order: COCO mask AP on the validation split (`CocoEvaluation`),
`BackupAndRestore` (resume), the best and last preset directories,
`CSVLogger`, `TensorBoard`, then a plot of the losses and AP and a grid of
ground truth against predictions at the end.
"""

import csv
import json
import math
import os

import keras

from keras_solov2.callbacks import CocoEvaluation, PresetCheckpoint
from keras_solov2.data import CocoDataset, read_tfrecords
from keras_solov2.data.tfrecord import read_tfrecord_metadata
from keras_solov2.evaluation.visualization import save_ground_truth_grid
from keras_solov2.io import check_coco_paths
from keras_solov2.models import preset_loader
from keras_solov2.models.solov2 import SOLOv2
from keras_solov2.optimizers import DEFAULT_SCHEDULE, solov2_optimizer
from keras_solov2.utils import image_geometry, run_recipe
from keras_solov2.utils.renamed import renamed_keyword

DEFAULT_MODEL = "light_r18_coco"


def train(
    annotations,
    images,
    output,
    tfrecords=None,
    val_annotations=None,
    val_images=None,
    model=DEFAULT_MODEL,
    epochs=None,
    batch_size=8,
    scale=None,
    learning_rate=None,
    schedule=DEFAULT_SCHEDULE,
    warmup_steps=500,
    max_instances=100,
    resume=False,
    num_grid_images=4,
    seed=0,
    verbose="auto",
    on_invalid="raise",
    image_size=None,
):
    """Trains SOLOv2 on a COCO-format dataset and writes everything to `output`.

    Args:
        annotations, images: the training split (COCO instances json, folder),
            or `None` with `tfrecords`.
        output: str. Run folder. Holds `recipe.json` (every setting of the
            run, defaults resolved: `keras_solov2.utils.run_recipe`),
            `results.csv`, `results.png`,
            `logs/` (TensorBoard), `best/` and `last/` (preset directories
            for `SOLOv2.from_preset`), `predictions.png` and `backup/`.
        tfrecords: optional shard prefix written by `write_tfrecords`
            (`keras-solov2 data to-tfrecord`): train from the shards instead;
            the classes come from their `.meta.json`.
        val_annotations, val_images: optional validation split; without it
            there is no AP and `best/` is not written.
        model: a preset name (`"light_r18_coco"`: COCO weights, a new
            classifier), a preset directory, or an architecture name
            (random init). Defaults to `"light_r18_coco"`.
        epochs: int. Defaults to the schedule's (12 for `"1x"`, 36 for
            `"3x"`); the step decays fall at the same fractions of the run.
        batch_size: int. Defaults to `8`.
        scale: `(long, short)`: train at this one keep-ratio scale (the
            two sides in either order). Defaults to the model's
            `train_scales`, the preset's official multi-scale training
            (`training_scales`).
        learning_rate: float. Defaults to the recipe, `0.01 * batch_size / 16`.
        schedule: `"1x"` or `"3x"`. Defaults to `"1x"`
            (`keras_solov2.optimizers.DEFAULT_SCHEDULE`).
        warmup_steps: int. Defaults to `500` (capped at a third of the run).
        max_instances: int. Instances per image (more are counted).
        resume: bool. Continue the interrupted run in `output` from its
            last finished epoch, with the optimizer state and schedule. The
            recipe must be the run's (`recipe.json`): a different one raises
            a `ValueError` naming the flags that differ.
        num_grid_images: int. Validation images in `predictions.png`.
        seed: int. Shuffling seed.
        verbose: Keras' `fit` verbosity. Defaults to `"auto"`.
        on_invalid: str. An invalid annotation or image file (truncated,
            not an image, not the json's size): `"raise"` an error naming
            it, or `"skip"` it and count it (`CocoDataset`). Every image is
            checked before the model is built, so a bad file stops the run
            in seconds, not in the middle of an epoch. The validation
            split's AP (`CocoEvaluation`) takes the same `on_invalid`.
            Defaults to `"raise"`.
        image_size: the deprecated name of `scale` (`DeprecationWarning`;
            removed in the next release).

    Returns:
        The `keras.callbacks.History` of the run (this session's epochs).
    """
    scale = renamed_keyword(
        scale, image_size, "scale", "image_size", "keras_solov2.training.train"
    )
    if (tfrecords is None) == (annotations is None or images is None):
        raise ValueError(
            "Give the training data either as ANNOTATIONS IMAGES or as "
            "--tfrecords PREFIX, not both or neither."
        )
    if tfrecords is None:
        check_coco_paths(annotations, images, "training")
    if val_annotations is not None and val_images is not None:
        check_coco_paths(val_annotations, val_images, "validation")
    if (val_annotations is None) != (val_images is None):
        raise ValueError("Give both --val-annotations and --val-images, or neither.")
    backup = os.path.join(output, "backup")
    if not resume and os.path.exists(os.path.join(output, "results.csv")):
        raise FileExistsError(
            f"{output!r} holds a run already (results.csv): pass --resume to continue "
            "it, or choose another --output."
        )

    if tfrecords is None:
        dataset = CocoDataset(
            annotations, images, on_invalid=on_invalid, check_images=True
        )
        num_images = len(dataset)
    else:
        if not os.path.isfile(f"{tfrecords}.meta.json"):
            raise FileNotFoundError(
                f"No shards at --tfrecords {tfrecords!r}: {tfrecords}.meta.json "
                "does not exist (write them with `keras-solov2 data to-tfrecord`)."
            )
        dataset = _ShardClasses(read_tfrecord_metadata(tfrecords))
        num_images = dataset.num_images
    network = build_model(model, dataset)
    os.makedirs(output, exist_ok=True)  # not before: a failed download leaves none
    scales = training_scales(network, scale)
    # Two canvases, landscape and its transpose, as mmdetection groups a
    # batch's images by aspect ratio: 800x1344 instead of a 1344 square.
    canvas = image_geometry.landscape_canvas_for_scales(scales, network.size_divisor)
    steps_per_epoch = max(1, num_images // batch_size)
    optimizer, recipe_epochs = solov2_optimizer(
        steps_per_epoch=steps_per_epoch,
        schedule=schedule,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
    )
    epochs = int(epochs or recipe_epochs)
    optimizer = _rescale_schedule(
        optimizer, steps_per_epoch * epochs, recipe_epochs * steps_per_epoch,
        learning_rate, warmup_steps,
    )  # fmt: skip
    recipe = run_recipe.make_recipe(
        network, optimizer, scales, canvas, model=model, annotations=annotations,
        images=images, tfrecords=tfrecords, val_annotations=val_annotations,
        val_images=val_images, schedule=schedule, epochs=epochs,
        batch_size=batch_size, steps_per_epoch=steps_per_epoch,
        max_instances=max_instances, seed=seed,
    )  # fmt: skip
    if resume:
        run_recipe.check_resume(output, recipe)
    run_recipe.write_recipe(output, recipe)
    network.compile(optimizer=optimizer)
    reader_args = dict(
        batch_size=batch_size,
        canvas=canvas,
        scales=scales,
        max_instances=max_instances,
        training=True,
        repeat=True,
        seed=seed,
        size_divisor=network.size_divisor,
        aspect_ratio_grouping=True,
    )
    if tfrecords is None:
        train_data = dataset.as_tf_dataset(**reader_args)
    else:
        train_data = read_tfrecords(f"{tfrecords}-*", **reader_args)

    callbacks = []
    if val_annotations is not None:
        callbacks.append(
            CocoEvaluation(val_annotations, val_images, on_invalid=on_invalid)
        )
    callbacks.append(keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False))
    metadata = {
        "trained_on": os.path.abspath(annotations or tfrecords),
        "num_classes": dataset.num_classes,
    }
    callbacks.append(
        PresetCheckpoint(
            last_dir=os.path.join(output, "last"),
            best_dir=os.path.join(output, "best") if val_annotations else None,
            metadata=metadata,
        )
    )
    results_csv = os.path.join(output, "results.csv")
    if resume:
        _drop_unfinished_rows(results_csv, backup)
    callbacks.append(keras.callbacks.CSVLogger(results_csv, append=resume))
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(output, "logs")))
    callbacks.append(ResultsPlot(results_csv, os.path.join(output, "results.png")))
    history = network.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    if val_annotations is not None and num_grid_images:
        save_ground_truth_grid(
            network,
            val_annotations,
            val_images,
            os.path.join(output, "predictions.png"),
            num_grid_images,
            on_invalid=on_invalid,
        )
    return history


class _ShardClasses:
    """The classes of TFRecord shards, as `build_model` reads a dataset's."""

    def __init__(self, metadata):
        self.class_names = list(metadata["class_names"])
        self.category_ids = [int(i) for i in metadata["category_ids"]]
        self.num_classes = len(self.class_names)
        self.num_images = int(metadata["num_images"])


def training_scales(model, scale=None, image_size=None):
    """Keep-ratio `(long, short)` training scales, one drawn per image.

    - With `scale=(a, b)`: the one scale `(max(a, b), min(a, b))`.
      (`image_size=` is its deprecated name, for one release.)
    - Otherwise the model's `train_scales`, which the presets hold: the
      official multi-scale training of their recipe (the full models: 1333 x
      800 down to 640; the light models: 768 x 512 down to 352, in steps of
      32; `r50_1x_coco`: 1333 x 800 alone). They are saved with the model,
      so a preset directory or a `.keras` file written by `train` keeps them.
    - A model without `train_scales` (one built with `SOLOv2(backbone, ...)`,
      or saved by an older version): its test scale and shorter sides down
      to 80% of it in steps of 32. That is the full models' official rule
      (for (1333, 800): 800, 768, ..., 640), not the light models' (which
      train above their test scale).

    Images are resized to fit a scale in either orientation, landscape
    images on the canvas `image_geometry.landscape_canvas_for_scales` (512 x
    768 for the light models' scales, 800 x 1344 for the full ones) and
    portrait ones on its transpose (`aspect_ratio_grouping=True`).
    """
    scale = renamed_keyword(
        scale,
        image_size,
        "scale",
        "image_size",
        "keras_solov2.training.training_scales",
    )
    if scale is not None:
        a, b = (int(v) for v in scale)
        return [(max(a, b), min(a, b))]
    if model.train_scales is not None:
        return [tuple(s) for s in model.train_scales]
    if model.test_scale is None:
        raise ValueError(
            "The model has neither train_scales nor a test_scale to train at: "
            "pass a scale (scale=(long, short); --scale LONG SHORT)."
        )
    long_side, short = max(model.test_scale), min(model.test_scale)
    shorts = range(short, int(0.8 * short) - 1, -32)
    return [(long_side, s) for s in shorts]


def build_model(spec, dataset):
    """The model for `dataset`'s classes from a preset name, directory or
    architecture (`preset_loader.resolve`)."""
    return preset_loader.resolve(
        SOLOv2,
        spec,
        num_classes=dataset.num_classes,
        class_names=dataset.class_names,
        category_ids=dataset.category_ids,
    )


def _rescale_schedule(optimizer, total, recipe_total, learning_rate, warmup_steps):
    """The recipe's optimizer with its decays at the same fractions of a
    `total`-step run, the warm-up capped at a third of it, and the rate set."""
    optimizer_config = optimizer.get_config()
    schedule = keras.optimizers.schedules.deserialize(optimizer_config["learning_rate"])
    config = schedule.get_config()
    config["milestones"] = [
        int(round(m / recipe_total * total)) for m in config["milestones"]
    ]
    config["warmup_steps"] = min(int(warmup_steps), max(1, total // 3))
    if learning_rate is not None:
        config["base_learning_rate"] = float(learning_rate)
    optimizer_config["learning_rate"] = type(schedule).from_config(config)
    return type(optimizer).from_config(optimizer_config)


def _drop_unfinished_rows(results_csv, backup):
    """Keeps only the epochs that the backup holds (a kill between the CSV
    row and the backup would otherwise repeat a row)."""
    metadata = os.path.join(backup, "training_metadata.json")
    if not (os.path.exists(results_csv) and os.path.exists(metadata)):
        return
    with open(metadata) as f:
        finished = int(json.load(f).get("epoch", 0))
    with open(results_csv, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < finished]
    with open(results_csv, "w", newline="") as f:
        csv.writer(f).writerows(kept)


class ResultsPlot(keras.callbacks.Callback):
    """Redraws `results.png` (losses and AP per epoch) from `results.csv`."""

    def __init__(self, results_csv, path):
        super().__init__()
        self.results_csv = results_csv
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        # CSVLogger writes its row in its own on_epoch_end, before this one.
        plot_results(self.results_csv, self.path)


def plot_results(results_csv, path):
    """Plots every column of a `results.csv`: losses left, AP right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]

    def column(name):
        return [float(r[name]) if r[name] not in ("", "NA") else math.nan for r in rows]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in rows[0]:
        if name.endswith("loss"):
            left.plot(epochs, column(name), marker="o", label=name)
        elif "_ap" in name:
            right.plot(epochs, column(name), marker="o", label=name)
    left.set(xlabel="epoch", title="losses")
    right.set(xlabel="epoch", title="validation AP")
    for axis in (left, right):
        if axis.lines:
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
