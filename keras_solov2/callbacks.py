"""Keras callbacks: COCO mask AP during `fit`, and preset checkpoints."""

import math

import keras

from keras_solov2.evaluation import evaluate
from keras_solov2.io import check_coco_paths, check_on_invalid

# logs key -> (iou type, COCO statistic)
LOG_KEYS = {
    "mask_ap": ("segm", "AP"),
    "mask_ap50": ("segm", "AP50"),
    "mask_ap75": ("segm", "AP75"),
    "mask_ap_small": ("segm", "APs"),
    "mask_ap_medium": ("segm", "APm"),
    "mask_ap_large": ("segm", "APl"),
    "box_ap": ("bbox", "AP"),
    "box_ap50": ("bbox", "AP50"),
    "box_ap75": ("bbox", "AP75"),
}


class CocoEvaluation(keras.callbacks.Callback):
    """COCO mask and box AP (pycocotools) at the end of an epoch.

    Predicts the dataset with the model being trained and puts
    `val_mask_ap`, `val_mask_ap50`, `val_mask_ap75`, `val_mask_ap_small`,
    `val_mask_ap_medium`, `val_mask_ap_large`, `val_box_ap`,
    `val_box_ap50` and `val_box_ap75` into the epoch's `logs`, so that
    `History`, `CSVLogger`, `TensorBoard`, `EarlyStopping` and
    `ModelCheckpoint(monitor="val_mask_ap", mode="max")` see them. Put it
    before those callbacks in the list. Box AP is computed from the boxes of
    the predicted masks. Shows a progress bar while it predicts
    (`verbose=1`).

    On epochs it skips (`every_n_epochs`) the keys are absent, which the
    Keras callbacks accept (`CSVLogger` writes "NA").

    Args:
        annotation_file: str. COCO instances json of the validation split.
        image_dir: str. Its image folder.
        every_n_epochs: int. Evaluate after every n-th epoch (and after the
            last one when `fit` tells its number). Defaults to `1`.
        max_images: optional int. Evaluate the first images only.
        prefix: str. Defaults to `"val_"`.
        verbose: int. `1` shows the progress bar and pycocotools' tables.
            Defaults to `1`.
        on_invalid: str. What an invalid annotation or image file of the
            validation split does, as in training and `keras-solov2
            --on-invalid`: `"raise"` an error that names it, or `"skip"` it,
            count it and leave it out of the ground truth
            (`keras_solov2.data.CocoDataset`). Defaults to `"raise"`.

    Attributes:
        last_report: the full `keras_solov2.evaluation.evaluate` report of
            the last evaluation (per-class AP, PR curves, results).

    Example:
    >>> model.fit(ds, epochs=12, callbacks=[
    ...     keras_solov2.callbacks.CocoEvaluation("val.json", "val_images/"),
    ...     keras.callbacks.CSVLogger("results.csv")])
    """

    def __init__(
        self,
        annotation_file,
        image_dir,
        every_n_epochs=1,
        max_images=None,
        prefix="val_",
        verbose=1,
        on_invalid="raise",
    ):
        super().__init__()
        check_coco_paths(annotation_file, image_dir)
        if isinstance(every_n_epochs, bool) or int(every_n_epochs) < 1:
            raise ValueError(f"`every_n_epochs` must be >= 1, got {every_n_epochs!r}.")
        check_on_invalid(on_invalid)
        self.annotation_file = annotation_file
        self.image_dir = image_dir
        self.every_n_epochs = int(every_n_epochs)
        self.max_images = max_images
        self.prefix = prefix
        self.verbose = verbose
        self.on_invalid = on_invalid
        self.last_report = None
        self._epochs = None

    def set_params(self, params):
        super().set_params(params)
        self._epochs = (params or {}).get("epochs")

    def on_epoch_end(self, epoch, logs=None):
        last = self._epochs is not None and epoch + 1 == self._epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        report = evaluate(
            self.model,
            self.annotation_file,
            self.image_dir,
            max_images=self.max_images,
            progress=bool(self.verbose),
            on_invalid=self.on_invalid,
        )
        self.last_report = report
        if logs is not None:
            for key, (iou_type, stat) in LOG_KEYS.items():
                value = report[iou_type][stat]
                logs[self.prefix + key] = value if value >= 0 else math.nan


class PresetCheckpoint(keras.callbacks.Callback):
    """Saves the model as a preset directory (`save_to_preset`) after each
    epoch: always to `last_dir`, and to `best_dir` when `monitor` improved.

    Args:
        last_dir: str or None. Preset directory of the latest model.
        best_dir: str or None. Preset directory of the best model.
        monitor: str. A `logs` key. Defaults to `"val_mask_ap"`.
        mode: `"max"` or `"min"`. Defaults to `"max"`.
        metadata: optional dict written into the preset's metadata.
    """

    def __init__(
        self,
        last_dir=None,
        best_dir=None,
        monitor="val_mask_ap",
        mode="max",
        metadata=None,
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min', got {mode!r}.")
        self.last_dir = last_dir
        self.best_dir = best_dir
        self.monitor = monitor
        self.mode = mode
        self.metadata = metadata
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        metadata = {**(self.metadata or {}), "epoch": epoch + 1}
        if self.last_dir:
            self.model.save_to_preset(self.last_dir, metadata=metadata)
        value = logs.get(self.monitor)
        if self.best_dir is None or value is None or math.isnan(value):
            return
        better = (
            self.best is None
            or (self.mode == "max" and value > self.best)
            or (self.mode == "min" and value < self.best)
        )
        if better:
            self.best = float(value)
            self.model.save_to_preset(
                self.best_dir, metadata={**metadata, self.monitor: self.best}
            )
