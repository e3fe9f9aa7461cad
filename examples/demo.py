"""keras-solov2 demo: train a light SOLOv2 from scratch on synthetic shapes.

Generates a COCO-format shapes dataset, trains a SOLOv2-Light R18 at half
width (grids and scale ranges scaled to 128 px inputs) on the CPU within a
time budget,
evaluates COCO mask AP on a separate generated split with pycocotools,
writes a PNG of predicted masks and saves the trained model.

    python examples/demo.py [--minutes 15] [--output-dir demo_output]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_solov2  # noqa: E402
from keras_solov2.data import CocoDataset, generate_shapes_dataset  # noqa: E402
from keras_solov2.evaluation import evaluate_model, load_image  # noqa: E402
from keras_solov2.evaluation.visualization import save_prediction_grid  # noqa: E402

IMAGE_SIZE = 128
# The light-448 model scaled by 128 / 448: grids and object-scale ranges.
DEMO_GRIDS = (12, 10, 7, 5, 4)
DEMO_SCALE_RANGES = ((1, 16), (8, 32), (16, 64), (32, 128), (64, 256))


class TimeBudget(keras.callbacks.Callback):
    """Learning-rate plan and stop by wall time.

    Linear warm-up over `warmup_steps` (without it the dice loss drives every
    mask logit negative in the first steps, where its gradient vanishes),
    then the rate drops x0.1 after `decay_at` of the budget, and training
    stops when `seconds` have passed.
    """

    def __init__(self, seconds, base_rate, warmup_steps=300, decay_at=0.75):
        super().__init__()
        self.seconds = seconds
        self.base_rate = base_rate
        self.warmup_steps = warmup_steps
        self.decay_at = decay_at

    def on_train_begin(self, logs=None):
        self.start = time.time()
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        elapsed = time.time() - self.start
        rate = self.base_rate * min(1.0, (self.step + 1) / self.warmup_steps)
        if elapsed > self.decay_at * self.seconds:
            rate *= 0.1
        self.model.optimizer.learning_rate.assign(rate)
        self.step += 1

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.start > self.seconds:
            self.model.stop_training = True


def build_model(num_classes, class_names, category_ids=None):
    return keras_solov2.SOLOv2.from_preset(
        "light_r18",
        load_weights=False,
        num_classes=num_classes,
        class_names=class_names,
        category_ids=category_ids,
        num_grids=DEMO_GRIDS,
        scale_ranges=DEMO_SCALE_RANGES,
        frozen_stages=-1,  # from scratch: train every stage ...
        norm_eval=False,  # ... and BatchNorm statistics
        test_scale=None,  # inputs are already 128 x 128
        # A narrower light model: 2.5x more steps in the CPU budget.
        base_channels=32,
        fpn_channels=128,
        head_channels=128,
        kernel_channels=64,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--output-dir", default="demo_output")
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument(
        "--decay-at", type=float, default=0.75, help="budget fraction for the x0.1 drop"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    out = args.output_dir
    os.makedirs(out, exist_ok=True)

    t0 = time.time()
    splits = {}
    for split, count, seed in (
        ("train", args.train_images, args.seed),
        ("val", args.val_images, args.seed + 1000),
    ):
        directory = os.path.join(out, f"shapes_{split}")
        annotation = generate_shapes_dataset(
            directory, count, image_size=(IMAGE_SIZE, IMAGE_SIZE), seed=seed
        )
        splits[split] = (annotation, os.path.join(directory, "images"))
    print(
        f"[demo] generated {args.train_images} + {args.val_images} images "
        f"in {time.time() - t0:.1f} s under {out}/"
    )

    train = CocoDataset(*splits["train"])
    print(f"[demo] classes: {train.class_names}; stats: {train.stats}")
    dataset = train.as_tf_dataset(
        batch_size=args.batch_size,
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        max_instances=8,
        training=True,
        repeat=True,
        seed=args.seed,
    )
    model = build_model(train.num_classes, train.class_names, train.category_ids)
    print(f"[demo] SOLOv2-Light R18 (half width), {model.count_params():,} parameters")
    optimizer = keras.optimizers.AdamW(
        learning_rate=args.learning_rate, weight_decay=1e-4, global_clipnorm=35.0
    )
    model.compile(optimizer=optimizer, jit_compile=True)

    budget = TimeBudget(
        args.minutes * 60, args.learning_rate, args.warmup_steps, args.decay_at
    )
    t_train = time.time()
    model.fit(
        dataset,
        steps_per_epoch=100,
        epochs=100_000,
        callbacks=[budget],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    train_seconds = time.time() - t_train
    steps = int(model.optimizer.iterations.numpy())
    print(
        f"[demo] trained {steps} steps ({steps * args.batch_size} images) "
        f"in {train_seconds / 60:.1f} min"
    )

    model_path = os.path.join(out, "solov2_shapes.keras")
    model.save(model_path)
    print(f"[demo] saved {model_path}")

    print("[demo] COCO mask AP on the generated validation split:")
    stats = evaluate_model(model, *splits["val"])
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(
            {
                "coco_mask": stats,
                "train_minutes": train_seconds / 60,
                "steps": steps,
                "batch_size": args.batch_size,
            },
            f,
            indent=2,
        )

    val = CocoDataset(*splits["val"])
    images = [
        load_image(os.path.join(splits["val"][1], val.image_record(i)["file_name"]))
        for i in range(6)
    ]
    predictions = model.predict(np.stack(images), verbose=0)
    grid_path = os.path.join(out, "predictions.png")
    save_prediction_grid(images, predictions, grid_path, class_names=train.class_names)
    print(f"[demo] wrote {grid_path}")
    print(
        f"[demo] mask AP {stats['AP']:.3f} (AP50 {stats['AP50']:.3f}) after "
        f"{train_seconds / 60:.1f} min of training; "
        f"total {(time.time() - t0) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
