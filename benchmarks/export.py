"""Exported SOLOv2 models: latency, file size and accuracy per quantisation.

    python benchmarks/export.py speed [--models light_r18 light_r50 r50] [--runs 5]
    python benchmarks/export.py accuracy MODEL.keras ANNOTATIONS IMAGES

`speed`: for each architecture at its test scale (a 4:3 image: 448x597 for
the light models, 800x1067 for the full ones), in this one process, on
`--threads` CPU threads: Keras `model.predict` (TF graph, uint8 image to
masks at the original size), and the `.tflite` file at the default export
size (448x608, 800x1088) in LiteRT's interpreter with XNNPACK, as float32,
float16, dynamic int8 and int8, end to end (the letterboxed uint8 image to
the outputs; pasting the kept masks is the app's step and not timed). The
post-processing share is 1 - (float32 body-only file) / (float32 file). Every
figure is the median of `--runs` runs after a warm-up run. Weights are random
(speed does not depend on their values) with `score_threshold=0` and
`filter_threshold=0`, so that every candidate and all 100 slots are filled:
the post-processing's worst case. int8 calibrates on the images of
`--num-calibration-images` (default 4) of `--calibration-images` (default:
../shared/data/coco_mini/train2017 when present, else random images).

`accuracy`: a trained model (the demo's `demo_output/solov2_shapes.keras`)
on a COCO-format split: COCO mask AP as Keras and as each `.tflite`
(through `keras_solov2.export.LiteRTPredictor`, masks pasted at the original
size), and the agreement of the matched detections with Keras (same label,
greedy by score): median mask IoU and median score difference.

Both print a markdown table and write JSON (and for `speed` a PNG plot when
matplotlib is installed) under `--output`.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import (  # noqa: E402
    COCO_MINI,
    calibration_images,
    cpu_name,
    median_seconds,
)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")
LABELS = {
    None: "float32",
    "float16": "float16",
    "dynamic_int8": "dyn int8",
    "int8": "int8",
}
IMAGE_SIZES = {"light": (448, 597), "full": (800, 1067)}


def speed(args):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    import keras_solov2
    from keras_solov2 import export

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    calibration, source = calibration_images(
        args.calibration_images, args.num_calibration_images
    )
    rows = []
    for name in args.models:
        model = keras_solov2.SOLOv2.from_preset(
            name, load_weights=False, score_threshold=0.0, filter_threshold=0.0
        )
        height, width = IMAGE_SIZES["light" if name.startswith("light") else "full"]
        image = np.random.default_rng(1).integers(0, 256, (height, width, 3))
        image = image.astype("uint8")
        row = {"model": name, "image": f"{height}x{width}"}
        row["keras_s"] = median_seconds(
            lambda m=model, x=image: m.predict(x[None], verbose=0), args.runs
        )
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for q in (*QUANTIZATIONS, "body"):
                path = os.path.join(tmp, f"{name}-{q}.tflite")
                start = time.perf_counter()
                export.tflite(
                    model,
                    path,
                    quantization=None if q == "body" else q,
                    representative_data=calibration if q == "int8" else None,
                    include_postprocessing=q != "body",
                    verbose=False,
                )
                files[q] = path
                row[f"export_s_{q}"] = time.perf_counter() - start
            size = export.graphs.default_image_size(model)
            canvas = export.letterbox(image, size)[0][None]
            row["tflite_input"] = f"{size[0]}x{size[1]}"
            for q, path in files.items():
                interpreter = Interpreter(model_path=path, num_threads=args.threads)
                runner = interpreter.get_signature_runner("serving_default")
                row[f"tflite_s_{q}"] = median_seconds(
                    lambda r=runner, c=canvas: r(image=c), args.runs
                )
                row[f"size_mb_{q}"] = os.path.getsize(path) / 1e6
                if q is None:
                    out = runner(image=canvas)
                    row["num_detections"] = int(out["num_detections"][0])
        row["postprocessing_share"] = 1 - row["tflite_s_body"] / row["tflite_s_None"]
        row["postprocessing_ms"] = 1000 * (row["tflite_s_None"] - row["tflite_s_body"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model

    lines = [
        f"CPU: {cpu_name()}, {args.threads} threads, medians of {args.runs} runs; "
        f"int8 calibrated on {source}.",
        "",
        "| model | Keras predict | TFLite input | float32 | float16 | dyn int8 | "
        "int8 | post-processing (fp32) | share | file MB (fp32 / fp16 / dyn / int8) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['image']}) | {r['keras_s']:.2f} s | "
            f"{r['tflite_input']} | "
            + " | ".join(f"{r[f'tflite_s_{q}']:.2f} s" for q in QUANTIZATIONS)
            + f" | {r['postprocessing_ms']:.0f} ms | "
            + f"{100 * r['postprocessing_share']:.1f}% | "
            + " / ".join(f"{r[f'size_mb_{q}']:.0f}" for q in QUANTIZATIONS)
            + " |"
        )
    report(args, "export_speed", rows, lines)
    plot_speed(args, rows)


def plot_speed(args, rows):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return
    keys = ["keras_s"] + [f"tflite_s_{q}" for q in QUANTIZATIONS]
    labels = ["Keras"] + [f"TFLite {LABELS[q]}" for q in QUANTIZATIONS]
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, r in enumerate(rows):
        ax.bar(
            np.arange(len(keys)) + 0.8 * i / len(rows),
            [r[k] for k in keys],
            width=0.8 / len(rows),
            label=f"{r['model']} ({r['image']})",
        )
    ax.set_xticks(np.arange(len(keys)) + 0.4 - 0.4 / len(rows), labels)
    ax.set_ylabel("seconds per image (median)")
    ax.set_title(f"SOLOv2 end to end, {args.threads} CPU threads: {cpu_name()}")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.output, "export_speed.png")
    fig.savefig(path, dpi=120)
    print(f"Wrote {path}")


def accuracy(args):
    import keras
    from detection_match import match_detections

    from keras_solov2 import export
    from keras_solov2.data import CocoDataset
    from keras_solov2.io import load_image

    model = keras.saving.load_model(args.model)
    dataset = CocoDataset(args.annotations, args.images)
    images = [
        load_image(os.path.join(args.images, dataset.image_record(i)["file_name"]))
        for i in range(len(dataset))
    ]
    size = images[0].shape[:2]
    calibration = images[: args.num_calibration_images]
    rows = [{"variant": "Keras", **keras_ap(model, args)}]
    with tempfile.TemporaryDirectory() as tmp:
        for q in QUANTIZATIONS:
            path = os.path.join(tmp, f"{q}.tflite")
            export.tflite(
                model,
                path,
                input_size=size,
                quantization=q,
                representative_data=calibration if q == "int8" else None,
                verbose=False,
            )
            predictor = export.LiteRTPredictor(path, num_threads=args.threads)
            ious, diffs = [], []
            for image in images[: args.agreement_images]:
                match = match_detections(
                    model.predict(image[None], verbose=0), predictor.predict(image)
                )
                ious.extend(match["ious"])
                diffs.extend(match["score_diffs"])
            rows.append(
                {
                    "variant": f"TFLite {LABELS[q]}",
                    **keras_ap(predictor, args),
                    "median_iou": float(np.median(ious)),
                    "iou_below_0.5": float(np.mean(np.asarray(ious) < 0.5)),
                    "median_score_diff": float(np.median(diffs)),
                    "size_mb": os.path.getsize(path) / 1e6,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"Model {args.model}, {len(images)} images of {args.annotations}; "
        f"agreement with Keras on the first {args.agreement_images} images "
        f"(int8 calibrated on {len(calibration)} of them). CPU: {cpu_name()}.",
        "",
        "| variant | mask AP | AP50 | AP75 | matched IoU (median) | IoU < 0.5 | "
        "score diff (median) | file MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        extra = (
            f"{r['median_iou']:.3f} | {100 * r['iou_below_0.5']:.1f}% | "
            f"{r['median_score_diff']:.4f} | {r['size_mb']:.1f}"
            if "median_iou" in r
            else "- | - | - | -"
        )
        lines.append(
            f"| {r['variant']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} "
            f"| {extra} |"
        )
    report(args, "export_accuracy", rows, lines)


def keras_ap(model, args):
    from keras_solov2.evaluation import evaluate

    stats = evaluate(
        model, args.annotations, args.images, iou_types=("segm",), progress=False
    )["segm"]
    return {k: stats[k] for k in ("AP", "AP50", "AP75")}


def report(args, name, rows, lines):
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, f"{name}.json"), "w") as f:
        json.dump({"cpu": cpu_name(), "rows": rows}, f, indent=2)
    print("\n".join(lines))
    with open(os.path.join(args.output, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("speed")
    s.add_argument("--models", nargs="+", default=["light_r18", "light_r50", "r50"])
    s.add_argument("--runs", type=int, default=5)
    s.add_argument(
        "--calibration-images", default=COCO_MINI if os.path.isdir(COCO_MINI) else None
    )
    s.add_argument(
        "--num-calibration-images",
        type=int,
        default=4,
        help="speed does not depend on the calibration; each image costs about "
        "a minute of TFLite's reference-kernel calibration for a light R18",
    )
    a = commands.add_parser("accuracy")
    a.add_argument("model", help="a trained .keras model (the demo's)")
    a.add_argument("annotations")
    a.add_argument("images")
    a.add_argument("--agreement-images", type=int, default=50)
    a.add_argument("--num-calibration-images", type=int, default=100)
    args = parser.parse_args(argv)
    speed(args) if args.command == "speed" else accuracy(args)


if __name__ == "__main__":
    main()
