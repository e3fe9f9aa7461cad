"""Input-pipeline throughput vs. what a SOLOv2-Light R18 training step consumes.

Measures images per second through decode, augmentation and batching on the
COCO fixture images (repeated): `CocoDataset.as_tf_dataset` (from the image
files, with the in-memory cache, with large-scale jitter) and
`read_tfrecords` (from shards on local disk); and on generated shapes. Next to
them, the images per second of a light R18 training step at the same input
size, on this machine, in one run. Medians over `--repeats`.

    python benchmarks/input_pipeline.py [--repeats 3] [--batches 20]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_solov2  # noqa: E402
from keras_solov2.data import (  # noqa: E402
    CocoDataset,
    generate_shapes_dataset,
    read_tfrecords,
    write_tfrecords,
)
from keras_solov2.models.solov2.solov2_presets import LIGHT_TRAIN_SCALES  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_MINI = os.path.join(ROOT, "tests", "fixtures", "coco_mini")


def pipeline_rate(dataset, batch_size, batches, repeats):
    iterator = iter(dataset)
    next(iterator)  # warm-up: tracing, first decode
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return statistics.median(rates), rates


def train_rate(model, dataset, batch_size, steps, repeats):
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=True)
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # compile
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates), rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args()
    rows = []

    # COCO images at the light models' multi-scale training sizes.
    coco = CocoDataset(
        os.path.join(COCO_MINI, "annotations", "instances_val2017.json"),
        os.path.join(COCO_MINI, "val2017"),
    )
    canvas = (768, 768)
    batch = 2
    data = coco.as_tf_dataset(
        batch_size=batch,
        canvas=canvas,
        scales=LIGHT_TRAIN_SCALES,
        max_instances=50,
        training=True,
        repeat=True,
    )
    rate, runs = pipeline_rate(data, batch, args.batches, args.repeats)
    rows.append(("input: coco_mini, light scales, 768x768 canvas", rate, runs))
    common = dict(batch_size=batch, canvas=canvas, max_instances=50, repeat=True)
    cached = coco.as_tf_dataset(scales=LIGHT_TRAIN_SCALES, cache=True, **common)
    rows.append(
        (
            "  same, cache=True",
            *pipeline_rate(cached, batch, args.batches, args.repeats),
        )
    )
    jitter = coco.as_tf_dataset(large_scale_jitter=(0.1, 2.0), **common)
    rows.append(
        (
            "  large_scale_jitter=(0.1, 2.0) instead",
            *pipeline_rate(jitter, batch, args.batches, args.repeats),
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "coco")
        write_tfrecords(coco, prefix, num_shards=4, progress=False)
        shards = read_tfrecords(prefix + "-*", scales=LIGHT_TRAIN_SCALES, **common)
        rows.append(
            (
                "  read_tfrecords, 4 local shards",
                *pipeline_rate(shards, batch, args.batches, args.repeats),
            )
        )
    model = keras_solov2.SOLOv2.from_preset(
        "light_r18_coco", load_weights=False, num_classes=coco.num_classes
    )
    rate_t, runs_t = train_rate(model, data, batch, args.train_steps, args.repeats)
    rows.append(("train step: light R18, batch 2, same batches", rate_t, runs_t))
    coco_ratio = rate / rate_t

    # Generated shapes at the demo's 128 px.
    with tempfile.TemporaryDirectory() as tmp:
        annotation = generate_shapes_dataset(tmp, 400, image_size=(128, 128), seed=0)
        shapes = CocoDataset(annotation, os.path.join(tmp, "images"))
        batch = 8
        data = shapes.as_tf_dataset(
            batch_size=batch, canvas=(128, 128), max_instances=8, repeat=True
        )
        rate_s, runs_s = pipeline_rate(data, batch, args.batches, args.repeats)
        rows.append(("input: shapes 128x128", rate_s, runs_s))
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from demo import build_model  # the demo's slim light R18

        demo = build_model(shapes.num_classes, shapes.class_names)
        rate_d, runs_d = train_rate(
            demo, data, batch, args.train_steps * 5, args.repeats
        )
        rows.append(
            ("train step: demo model (slim light R18), batch 8", rate_d, runs_d)
        )
    shapes_ratio = rate_s / rate_d

    print(f"\n{'what':58s} {'img/s (median)':>15s}  runs")
    for name, value, runs in rows:
        print(f"{name:58s} {value:15.1f}  {', '.join(f'{r:.1f}' for r in runs)}")
    print(f"\ninput / training, COCO at light scales: {coco_ratio:.1f}x (goal >= 3x)")
    print(f"input / training, shapes at 128 px:     {shapes_ratio:.1f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
