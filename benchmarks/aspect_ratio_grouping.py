"""Training on one square canvas against two aspect-ratio grouped canvases.

    python benchmarks/aspect_ratio_grouping.py [--variant light_r18]
        [--batch-size 2] [--steps 10]

Each mode trains in its own process on the same real COCO images
(`../shared/data/coco_mini/train2017`, 26 photos, 3 of them portrait; else
the five images of `tests/fixtures/coco_mini`), with the training recipe's
multi-scale readers (`keras_solov2.training.training_scales`: for light R18
(768, 448) down to (768, 352)): `square` pads every image to the square
that fits both orientations (`image_geometry.canvas_for_scales`, 768x768),
`grouped` passes `aspect_ratio_grouping=True` (448x768 for landscape
batches, 768x448 for portrait ones), what `keras-solov2 train` does.
It runs `--steps` training steps (`train_on_batch`, as `fit` does) of
random-init SOLOv2 with the recipe's optimizer; the table gives the median
time of a step per canvas, leaving out each canvas's first step (which
traces), the images per second over those steps, the canvas pixels per
image and the peak RSS.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import COCO_MINI, cpu_name, peak_rss_mib, run_children  # noqa: E402

FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "coco_mini")


def data_split():
    """`(annotation file, image folder)` of the photos to train on."""
    shared = os.path.dirname(COCO_MINI)
    if os.path.isdir(shared):
        return (
            os.path.join(shared, "annotations", "instances_train2017.json"),
            COCO_MINI,
        )
    return (
        os.path.join(FIXTURE, "annotations", "instances_val2017.json"),
        os.path.join(FIXTURE, "val2017"),
    )


def child(args):
    import keras
    import numpy as np

    import keras_solov2
    from keras_solov2.data import CocoDataset
    from keras_solov2.training import training_scales
    from keras_solov2.utils import image_geometry

    dataset = CocoDataset(*data_split())
    keras.utils.set_random_seed(0)
    model = keras_solov2.SOLOv2.from_preset(
        args.variant, load_weights=False, num_classes=dataset.num_classes
    )
    scales = training_scales(model)
    grouped = args.child == "grouped"
    if grouped:
        canvas = image_geometry.landscape_canvas_for_scales(scales)
    else:
        canvas = image_geometry.canvas_for_scales(scales)
    batches = dataset.as_tf_dataset(
        batch_size=args.batch_size,
        canvas=canvas,
        scales=scales,
        max_instances=100,
        seed=0,
        repeat=True,
        aspect_ratio_grouping=grouped,
    )
    optimizer, _ = keras_solov2.solov2_optimizer(
        steps_per_epoch=args.steps, batch_size=args.batch_size
    )
    model.compile(optimizer=optimizer)
    shapes, times = [], []
    iterator = iter(batches)
    for _ in range(args.steps):
        images, targets = next(iterator)
        start = time.perf_counter()
        model.train_on_batch(images, targets)
        times.append(time.perf_counter() - start)
        shapes.append(tuple(int(v) for v in images.shape[1:3]))
    # The first step on each canvas traces (the second canvas's relaxes the
    # trace to any height and width); the rest are the steps to compare.
    firsts = {shapes.index(shape) for shape in set(shapes)}
    steady = [i for i in range(len(times)) if i not in firsts]
    per_canvas = {}
    for i in steady:
        per_canvas.setdefault(f"{shapes[i][0]}x{shapes[i][1]}", []).append(times[i])
    with open(args.out, "w") as f:
        json.dump(
            {
                "canvas": list(canvas),
                "s per step": {
                    k: [float(np.median(v)), len(v)] for k, v in per_canvas.items()
                },
                "images per s": args.batch_size
                * len(steady)
                / sum(times[i] for i in steady),
                "pixels per image": float(np.mean([h * w for h, w in shapes])),
                "peak rss MiB": peak_rss_mib(),
            },
            f,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="light_r18")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--child", choices=("square", "grouped"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"CPU: {cpu_name()}; data: {data_split()[1]}")
    print(
        f"{args.variant}, batch {args.batch_size}, {args.steps} training "
        "steps, medians without each canvas's first step\n"
    )
    options = []
    for name in ("variant", "batch_size", "steps"):
        options += [f"--{name.replace('_', '-')}", getattr(args, name)]
    results = run_children(__file__, ("square", "grouped"), options)
    print(
        "| canvas | s per step (steps) | images/s | canvas px per image "
        "| peak RSS MiB |"
    )
    print("|---|---|---|---|---|")
    for mode, row in results.items():
        steps = ", ".join(
            f"{k}: {s:.2f} ({n})" for k, (s, n) in row["s per step"].items()
        )
        print(
            f"| {mode} | {steps} | {row['images per s']:.2f} | "
            f"{row['pixels per image']:,.0f} | {row['peak rss MiB']:,.0f} |"
        )
    speedup = results["grouped"]["images per s"] / results["square"]["images per s"]
    print(f"\ngrouped / square images per second: {speedup:.2f}x")


if __name__ == "__main__":
    main()
