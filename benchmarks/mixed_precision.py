"""Peak memory and step time of SOLOv2 under float32 and mixed precision.

    python benchmarks/mixed_precision.py [--model light_r18] [--size 512]
        [--batches 1 2] [--steps 3] [--backend tensorflow]
        [--policies float32 mixed_bfloat16 mixed_float16]

Every (policy, mode, batch) runs in a fresh Python process. The child builds
`keras_solov2.SOLOv2.from_preset(model, load_weights=False, dtype=policy)`,
compiles the official recipe (mixed_float16: with Keras' LossScaleOptimizer)
and makes a synthetic batch at `size` x `size` with 8 rectangle instances per
image. Its resident memory then (VmRSS: the model and the batch) is the
baseline. It resets the peak (writing "5" to /proc/self/clear_refs) and runs
`steps + 1` training steps (mode `train`) or `predict` calls on the batch as
uint8 images (mode `predict`, decoding and full-size masks included); VmHWM
minus the baseline is the peak. That peak includes tracing and, for
training, the optimizer's state; the difference between two batch sizes,
divided by their difference, is the memory per image, which is what the
policy changes. Times are medians over the `steps` calls after the first.
TensorFlow's CPU allocator keeps what it freed, so a peak measured after a
warm-up would miss most of a step; hence one process per measurement. Where a
GPU runs the JAX backend (`--backend jax`), the child also reports the
device's `peak_bytes_in_use`.

Measured on a 2-core Intel Xeon (Sapphire Rapids, AVX-512 BF16 and AMX),
TensorFlow 2.21: see the README's "Mixed precision" table.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, keras
    import keras_solov2

    model_name, policy, batch, size, steps, mode = (
        sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
        sys.argv[6],
    )

    def rss(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # MiB
        raise RuntimeError(field)

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def device_peak():
        if keras.backend.backend() != "jax":
            return None
        import jax
        stats = jax.local_devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else peak / 2**20

    keras.utils.set_random_seed(0)
    model = keras_solov2.SOLOv2.from_preset(
        model_name, load_weights=False, dtype=policy, test_scale=(size, size)
    )
    model.compile()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    slots = 8
    masks = np.zeros((batch, slots, size, size), "uint8")
    boxes = np.zeros((batch, slots, 4), "float32")
    for b in range(batch):
        for k in range(slots):
            y, x = rng.integers(0, size - 96, 2)
            h, w = rng.integers(32, 96, 2)
            masks[b, k, y : y + h, x : x + w] = 1
            boxes[b, k] = (x, y, x + w, y + h)
    targets = {
        "masks": masks,
        "labels": rng.integers(0, 80, (batch, slots)).astype("int32"),
        "boxes": boxes,
    }
    if mode == "train":
        baseline = rss("VmRSS")  # the model and the batch
        reset_peak()
        times = []
        for _ in range(steps + 1):  # the first step traces
            start = time.perf_counter()
            logs = model.train_on_batch(images, targets, return_dict=True)
            times.append(time.perf_counter() - start)
        assert np.isfinite(logs["loss"]), logs
    else:
        photo = images.astype("uint8")
        baseline = rss("VmRSS")
        reset_peak()
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            model.predict(photo, verbose=0)
            times.append(time.perf_counter() - start)
    print("RESULT " + json.dumps({
        "baseline_mib": baseline,
        "peak_mib": rss("VmHWM") - baseline,
        "seconds": float(np.median(times[1:])),
        "device_peak_mib": device_peak(),
    }))
    """
)


def run_child(args, policy, batch, mode):
    env = dict(os.environ, KERAS_BACKEND=args.backend, TF_CPP_MIN_LOG_LEVEL="3")
    argv = [args.model, policy, str(batch), str(args.size), str(args.steps), mode]
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"{policy} batch {batch} {mode} failed:\n{result.stderr[-3000:]}"
        )
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _mib(value):
    return "" if value is None else f"{value:,.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="light_r18")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument(
        "--policies",
        nargs="+",
        default=["float32", "mixed_bfloat16", "mixed_float16"],
    )
    args = parser.parse_args()
    print(
        f"{args.model} at {args.size}x{args.size}, backend {args.backend}; peak "
        f"resident memory above the baseline (MiB), medians of {args.steps} steps"
    )
    print("| policy | mode | batch | baseline | peak | s/step | device peak |")
    print("|---|---|---|---|---|---|---|")
    peaks = {}
    for policy in args.policies:
        for mode in ("train", "predict"):
            for batch in args.batches:
                r = run_child(args, policy, batch, mode)
                peaks[policy, mode, batch] = r["peak_mib"]
                print(
                    f"| {policy} | {mode} | {batch} | {r['baseline_mib']:,.0f} | "
                    f"{r['peak_mib']:,.0f} | {r['seconds']:.2f} | "
                    f"{_mib(r['device_peak_mib'])} |",
                    flush=True,
                )
    if len(args.batches) < 2:
        return
    low, high = min(args.batches), max(args.batches)
    print(f"\nPer image: (peak at batch {high} - peak at batch {low}) / {high - low}")
    for mode in ("train", "predict"):
        slopes = {
            policy: (peaks[policy, mode, high] - peaks[policy, mode, low])
            / (high - low)
            for policy in args.policies
        }
        base = slopes.get("float32")
        for policy, slope in slopes.items():
            ratio = f" ({slope / base:.2f}x float32)" if base else ""
            print(f"{mode} {policy}: {slope:,.0f} MiB per image{ratio}")


if __name__ == "__main__":
    main()
