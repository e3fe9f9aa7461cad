"""Peak memory of SOLOv2 inference on a 4000x3000 photo (light R18, 100 masks).

    python benchmarks/predict_memory.py [--runs 3] [--backend tensorflow]
        [--variants predict predict_step features]

Every measurement runs in a fresh Python process. The process builds
`keras_solov2.SOLOv2.from_preset("light_r18", load_weights=False,
score_threshold=0.0, filter_threshold=0.0)`, so that all 100 detection slots
are filled (the child checks `num_detections == 100`), predicts once on a
small 480x640 image to load and trace everything, creates the random
3000x4000x3 uint8 photo, and records its resident memory (VmRSS) as the
baseline: the model's own memory. Then it predicts twice on the photo. Before
each call the peak resident memory is reset (writing "5" to
/proc/self/clear_refs); after it, VmHWM from /proc/self/status minus the
baseline is the call's peak above the model. The first call at the new size
includes retracing; the second reuses the trace. The table gives the medians
over `--runs` processes (and the range).

Variants:
    predict       `model.predict(photo[None])`, the public API (Keras' predict
                  converts its outputs to NumPy with a copy).
    predict_step  the model's `predict_step`, compiled once (`tf.function`
                  with `reduce_retracing=True` on TensorFlow, `jax.jit` on
                  JAX), its outputs read with `np.asarray` (no copy): the cost
                  of the decoding itself.
    features      `mask_resolution="features"`: `model.predict` returns
                  stride-4 mask probabilities, then
                  `keras_solov2.layers.paste_masks` makes the original-size
                  masks from them, eagerly.

To measure another checkout (the code before a change), put it first on the
path: `git worktree add /tmp/before <commit>` and run this script with
`PYTHONPATH=/tmp/before`. The header names the `keras_solov2` that ran.

Measured on a 2-core Intel Xeon (Sapphire Rapids, KVM), TensorFlow 2.21, Keras
3.15, medians of 3 processes (1 on JAX). The output masks alone are
100 x 3000 x 4000 bool = 1,144 MiB.

    PYTHONPATH=/tmp/before python benchmarks/predict_memory.py \
        --variants predict predict_step    # before: e999619
    python benchmarks/predict_memory.py    # after

Peak above the baseline (MiB) and CPU seconds, 1st call / 2nd call. Before,
all 100 maps were resized at once and Keras' `predict` copied its outputs;
after, the kept ones are resized 4 at a time, in place, and `SOLOv2.predict`
reads the outputs of its compiled predict function without a copy.

| code | variant | peak (MiB) | CPU (s) |
|---|---|---|---|
| before | predict | 8,316 / 8,316 | 17.9 / 10.7 |
| before | predict_step | 7,189 / 7,190 | 15.4 / 8.8 |
| after | predict | 1,310 / 1,313 | 13.8 / 11.0 |
| after | predict_step | 1,294 / 1,295 | 14.6 / 10.5 |
| after | features (stride-4 + `paste_masks`) | 1,452 / 1,486 | 15.1 / 11.2 |

Since 2026-12-06 TensorFlow's graph resizes two pieces of two masks at once
(the same four masks' scratch memory): on a 2-core AMD EPYC, `--runs 2`,
`predict` 1,536 -> 1,522 MiB and 10.0 -> 7.2 s for the 2nd call,
`predict_step` 1,605 -> 1,524 MiB and 10.0 -> 7.2 s.

JAX 0.10.2 (`--backend jax`, one process each): `predict` 2,337 / 2,337 MiB
when `SOLOv2.predict` went through Keras' JAX `predict_on_batch` (which copies
the outputs with `np.array`), 1,671 / 1,672 MiB since it runs its own jitted
predict step and reads the outputs with `np.asarray`; `predict_step` 1,660 /
1,664 MiB; about 42-48 CPU s for the second call.
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

PHOTO = (3000, 4000)  # height, width: a 12 MP landscape photo
WARMUP = (480, 640)
MIB = 1024 * 1024


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _child(variant):
    import keras
    import numpy as np

    import keras_solov2

    keras.utils.set_random_seed(0)
    model = keras_solov2.SOLOv2.from_preset(
        "light_r18", load_weights=False, score_threshold=0.0, filter_threshold=0.0
    )
    if variant == "features":
        model.mask_resolution = "features"
    run = _runner(model, variant)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (1, *WARMUP, 3), dtype="uint8")
    out = run(small)
    del out
    photo = rng.integers(0, 256, (1, *PHOTO, 3), dtype="uint8")
    gc.collect()
    baseline = _status("VmRSS")
    calls = []
    for _ in range(2):
        _reset_peak()
        start, cpu = time.perf_counter(), time.process_time()
        out = run(photo)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = _status("VmHWM") - baseline
        masks = out["masks"]
        if masks.shape != (1, 100, *PHOTO) or masks.dtype != bool:
            raise AssertionError(f"masks {masks.shape} {masks.dtype}")
        if int(out["num_detections"][0]) != 100:
            raise AssertionError(f"{out['num_detections'][0]} detections, not 100")
        calls.append(
            {
                "peak_mib": peak / MIB,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "num_detections": int(out["num_detections"][0]),
            }
        )
        del out, masks
        gc.collect()
    return {
        "variant": variant,
        "baseline_mib": baseline / MIB,
        "calls": calls,
        "module": os.path.dirname(keras_solov2.__file__),
    }


def _runner(model, variant):
    import keras
    import numpy as np

    if variant == "predict":
        return lambda images: model.predict(images, verbose=0)
    if variant == "features":
        from keras_solov2.models.solov2.mask_paste import paste_masks

        def run(images):
            out = model.predict(images, verbose=0)
            resized = model.image_converter.resized_size(*images.shape[1:3])
            out["masks"] = np.asarray(
                paste_masks(
                    out.pop("mask_probs"),
                    resized,
                    images.shape[1:3],
                    mask_threshold=model.mask_threshold,
                    mask_stride=model.decoder.mask_stride,
                    num_detections=out["num_detections"],
                )
            )
            return out

        return run
    if variant != "predict_step":
        raise ValueError(f"unknown variant {variant!r}")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        step = tf.function(model.predict_step, reduce_retracing=True)
        return lambda images: {k: np.asarray(v) for k, v in step(images).items()}
    import jax

    step = jax.jit(model.predict_step)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )
    return lambda images: {k: np.asarray(v) for k, v in step(state, images)[0].items()}


def _measure(variant, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", variant],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"variant": variant, "error": " | ".join(tail)}
    return json.loads(lines[-1])


def _summary(values, fmt):
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument(
        "--variants", nargs="+", default=["predict", "predict_step", "features"]
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)), flush=True)
        return
    print(
        f"backend {args.backend}, photo {PHOTO[1]}x{PHOTO[0]} uint8, light_r18, "
        f"{args.runs} fresh processes per variant; peak RSS above the baseline "
        "(VmHWM after clear_refs), MiB: median (min-max)"
    )
    rows = []
    for variant in args.variants:
        results = [_measure(variant, args.backend) for _ in range(args.runs)]
        errors = [r["error"] for r in results if "error" in r]
        results = [r for r in results if "error" not in r]
        if errors:
            print(f"{variant}: {len(errors)} failed run(s): {errors[0]}")
        if not results:
            continue
        print(f"{variant}: keras_solov2 from {results[0]['module']}")
        baseline = _summary([r["baseline_mib"] for r in results], "{:,.0f}")
        for i, name in enumerate(("1st (retrace)", "2nd")):
            calls = [r["calls"][i] for r in results]
            detections = sorted({c["num_detections"] for c in calls})
            rows.append(
                f"| {variant} | {name} | "
                f"{_summary([c['peak_mib'] for c in calls], '{:,.0f}')} | "
                f"{_summary([c['seconds'] for c in calls], '{:.1f}')} | "
                f"{_summary([c['cpu_seconds'] for c in calls], '{:.1f}')} | "
                f"{baseline} | {','.join(map(str, detections))} |"
            )
    print()
    print(
        "| variant | call | peak above baseline (MiB) | wall time (s) | CPU time (s) "
        "| baseline (MiB) | num_detections |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
