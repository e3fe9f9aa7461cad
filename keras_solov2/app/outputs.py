"""Files in, files out: what `keras-solov2 predict` and `evaluate` write."""

import csv
import json
import os
import warnings

import keras
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from keras_solov2.data.images import ImageError
from keras_solov2.evaluation import evaluate
from keras_solov2.evaluation.visualization import draw_instances
from keras_solov2.io import check_on_invalid, image_paths, load_image


def encode_rle(mask):
    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def predict_to_files(
    model, paths, output, score_threshold=None, progress=True, on_invalid="raise"
):
    """Predicts images and writes, per image, `NAME.png` (masks drawn and
    named) and `NAME.json` (RLE masks, boxes, labels, class names, COCO
    category ids and scores) into `output`.

    Args:
        model: a `keras_solov2.SOLOv2`.
        paths: image files and folders.
        output: str. Folder to write.
        score_threshold: optional float. Keeps detections scoring at least
            this (also what is drawn). Defaults to the model's
            `score_threshold`.
        progress: bool. A progress bar over the images.
        on_invalid: str. An image file that cannot be read (truncated, not an
            image): `"raise"` the `ImageError` that names it, or `"skip"` it,
            predict the rest and warn with the count and the files.
            Defaults to `"raise"`.

    Returns:
        list of the per-image dicts written as JSON (none for skipped files).
    """
    check_on_invalid(on_invalid)
    files = image_paths(paths)
    os.makedirs(output, exist_ok=True)
    threshold = model.score_threshold if score_threshold is None else score_threshold
    bar = keras.utils.Progbar(len(files), unit_name="image") if progress else None
    written, stems, skipped = [], set(), []
    for path in files:
        try:
            image = load_image(path)
        except ImageError as error:
            if on_invalid == "raise":
                raise
            skipped.append(f"{path} ({error.reason})")
            continue
        out = model.predict(image[None], verbose=0)
        n = int(out["num_detections"][0])
        keep = [i for i in range(n) if out["scores"][0, i] >= threshold]
        detections = []
        for i in keep:
            label = int(out["labels"][0, i])
            detections.append(
                {
                    "label": label,
                    "class_name": (
                        model.class_names[label] if model.class_names else str(label)
                    ),
                    "category_id": (
                        model.category_ids[label] if model.category_ids else None
                    ),
                    "score": float(out["scores"][0, i]),
                    "box": [float(v) for v in out["boxes"][0, i]],
                    "segmentation": encode_rle(out["masks"][0, i]),
                }
            )
        stem = os.path.splitext(os.path.basename(path))[0]
        while stem in stems:  # same name in two folders
            stem += "_"
        stems.add(stem)
        record = {
            "image": os.path.abspath(path),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "detections": detections,
        }
        with open(os.path.join(output, stem + ".json"), "w") as f:
            json.dump(record, f)
        drawn = draw_instances(
            image,
            out["masks"][0, keep] if keep else np.zeros((0, *image.shape[:2]), bool),
            out["labels"][0, keep],
            out["scores"][0, keep],
            class_names=model.class_names,
            score_threshold=threshold,
        )
        Image.fromarray(drawn).save(os.path.join(output, stem + ".png"))
        written.append(record)
        if bar is not None:
            bar.add(1)
    if skipped:
        warnings.warn(
            f"{len(skipped)} of {len(files)} images could not be read and were "
            f"skipped: {'; '.join(skipped)}.",
            stacklevel=2,
        )
    return written


def evaluate_to_files(
    model, annotation_file, image_dir, output, progress=True, on_invalid="raise"
):
    """COCO evaluation written to `output`: `results.json` (COCO results
    format, for `COCO.loadRes`), `per_class_ap.csv`, `metrics.json` and
    `pr_curve.png`. Returns the `keras_solov2.evaluation.evaluate` report
    (`on_invalid`: see there)."""
    report = evaluate(
        model, annotation_file, image_dir, progress=progress, on_invalid=on_invalid
    )
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump(report["results"], f)
    with open(os.path.join(output, "metrics.json"), "w") as f:
        json.dump({"segm": report["segm"], "bbox": report["bbox"]}, f, indent=2)
    with open(os.path.join(output, "per_class_ap.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["category_id", "name", "instances", "mask_ap", "box_ap"])
        for row in report["per_class"]:
            writer.writerow(
                [
                    row["category_id"],
                    row["name"],
                    row["num_instances"],
                    f"{row['mask_ap']:.4f}",
                    f"{row['box_ap']:.4f}",
                ]
            )
    plot_pr_curves(report["pr_curves"], os.path.join(output, "pr_curve.png"))
    return report


def plot_pr_curves(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, (iou_type, title) in zip(
        axes, (("segm", "masks"), ("bbox", "boxes")), strict=True
    ):
        data = curves[iou_type]
        for key in ("iou_0.50", "iou_0.75", "iou_0.50:0.95"):
            axis.plot(data["recall"], data[key], label=f"IoU {key[4:]}")
        axis.set(xlabel="recall", title=f"precision-recall ({title})", xlim=(0, 1))
        axis.legend()
    axes[0].set(ylabel="precision", ylim=(0, 1.01))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ap_table(report):
    """The COCO AP table (segm and bbox) and per-class AP, as text."""
    lines = [
        f"{'':8s}"
        + "".join(f"{k:>8s}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
    ]
    for iou_type, name in (("segm", "mask"), ("bbox", "box")):
        stats = report[iou_type]
        lines.append(
            f"{name:8s}"
            + "".join(
                f"{stats[k]:8.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
            )
        )
    lines.append("")
    lines.append(f"{'class':24s}{'instances':>10s}{'mask AP':>9s}{'box AP':>9s}")
    for row in report["per_class"]:
        lines.append(
            f"{row['name'][:24]:24s}{row['num_instances']:10d}"
            f"{row['mask_ap']:9.3f}{row['box_ap']:9.3f}"
        )
    return "\n".join(lines)
