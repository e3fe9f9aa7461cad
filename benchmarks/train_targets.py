"""Training-batch masks: the readers' compact targets against full masks.

    python benchmarks/train_targets.py [--variant light_r18] [--canvas 448 608]
        [--batch-size 2] [--max-instances 100] [--steps 4]

Each form trains in its own process (so that each peak RSS is its own) on
the same real COCO batches (`../shared/data/coco_mini`, else the five
images of `tests/fixtures/coco_mini`): `model.fit` on `CocoDataset`
batches with `mask_targets="full"` (canvas-sized uint8 masks for every one
of the `max_instances` slots) and `"compact"` (the default: stride-4 masks,
centres and areas). Prints the bytes of one batch's targets, the median
step time after the first step, the peak RSS, and the first step's losses
(the two forms must give the same).
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


def data_folder():
    """The folder holding `annotations/` and `val2017/`."""
    shared = os.path.dirname(COCO_MINI)  # COCO_MINI is its train2017 folder
    return shared if os.path.isdir(shared) else FIXTURE


def child(args):
    """One form's steps; writes its numbers as json to `args.out`."""
    import keras
    import numpy as np

    import keras_solov2
    from keras_solov2.data import CocoDataset

    folder = data_folder()
    dataset = CocoDataset(
        os.path.join(folder, "annotations", "instances_val2017.json"),
        os.path.join(folder, "val2017"),
    )
    batches = dataset.as_tf_dataset(
        batch_size=args.batch_size,
        canvas=tuple(args.canvas),
        max_instances=args.max_instances,
        seed=0,
        repeat=True,
        mask_targets=args.child,
    )
    first = next(iter(batches))
    target_bytes = sum(v.numpy().nbytes for v in first[1].values())
    keras.utils.set_random_seed(0)
    model = keras_solov2.SOLOv2.from_preset(
        args.variant, load_weights=False, num_classes=dataset.num_classes
    )
    optimizer, _ = keras_solov2.solov2_optimizer(
        steps_per_epoch=10, batch_size=args.batch_size
    )
    model.compile(optimizer=optimizer)
    times, first_losses = [], None
    iterator = iter(batches)
    for step in range(args.steps):
        images, targets = next(iterator)
        start = time.perf_counter()
        logs = model.train_on_batch(images, targets, return_dict=True)
        times.append(time.perf_counter() - start)
        if step == 0:
            first_losses = {k: float(v) for k, v in logs.items()}
    with open(args.out, "w") as f:
        json.dump(
            {
                "target MiB per batch": target_bytes / 2**20,
                "s per step": float(np.median(times[1:] or times)),
                "peak rss MiB": peak_rss_mib(),
                "first losses": first_losses,
            },
            f,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="light_r18")
    parser.add_argument("--canvas", type=int, nargs=2, default=(448, 608))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-instances", type=int, default=100)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", choices=("full", "compact"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"CPU: {cpu_name()}; data: {data_folder()}")
    print(
        f"{args.variant}, batch {args.batch_size} at {args.canvas[0]}x"
        f"{args.canvas[1]}, max_instances {args.max_instances}, "
        f"median of steps 2..{args.steps}\n"
    )
    options = ["--canvas", *args.canvas]
    for name in ("variant", "batch_size", "max_instances", "steps"):
        options += [f"--{name.replace('_', '-')}", getattr(args, name)]
    results = run_children(__file__, ("full", "compact"), options)
    print("| targets | MiB per batch | s per step | peak RSS MiB | first mask loss |")
    print("|---|---|---|---|---|")
    for form, row in results.items():
        print(
            f"| {form} | {row['target MiB per batch']:.1f} | {row['s per step']:.2f} "
            f"| {row['peak rss MiB']:,.0f} | {row['first losses']['mask_loss']:.6f} |"
        )


if __name__ == "__main__":
    main()
