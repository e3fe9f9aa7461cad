"""Where Keras `predict`'s time goes, against mmdetection on the same image.

    python benchmarks/predict_split.py [--variants light_r18 r50] [--runs 5]

For each model, with the reference harness's weights (converted) and its
480x640 photo, in this one process on `--threads` threads: mmdetection's
`inference_detector` end to end (its own process, `benchmarks/vs_mmdet.py`'s
child), our `model.predict` end to end, and its parts, each timed alone as
a compiled TensorFlow function: the preprocessing (the exact keep-ratio
resize and the padding), the network (`model(inputs)`), the decoding
(`model.decoder`: point NMS, the dynamic masks, Matrix NMS, the masks
pasted at 480x640); the rest of `predict` (Keras's loop, conversions) is
its overhead. `predict` runs twice: as Keras runs it by default on a CPU
(`jit_compile="auto"` is off there: the TensorFlow graph, oneDNN's
kernels), and after `model.compile(jit_compile=True)`, where XLA compiles
the network and the decoding up to the feature-resolution masks, and the
paste to the photo stays in the TensorFlow graph; the network alone is
timed both ways too, the decoding (all of it) in the TensorFlow graph.
Medians of `--runs` runs after a warm-up run.
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import cpu_name, median_seconds  # noqa: E402
from vs_mmdet import MMREF_OUT, converted_model, mmdet_missing, run_mmdet  # noqa: E402


def split(model, rgb, runs):
    import tensorflow as tf

    images = tf.constant(rgb[None])
    preprocess = tf.function(lambda x: model.preprocess(x)[0])
    inputs, resized, _ = model.preprocess(images)
    network = tf.function(lambda x: model(x, training=False), jit_compile=True)
    graph_network = tf.function(lambda x: model(x, training=False))
    dense = network(inputs)
    decoder = tf.function(
        lambda d: model.decoder(
            d["category_logits"],
            d["kernels"],
            d["mask_features"],
            resized_size=resized,
            original_size=rgb.shape[:2],
        )
    )
    model.compile()  # Keras' default: no XLA on a CPU
    row = {
        "predict (graph)": median_seconds(
            lambda: model.predict(rgb[None], verbose=0), runs
        )
    }
    model.compile(jit_compile=True)
    row = {
        **row,
        "predict": median_seconds(lambda: model.predict(rgb[None], verbose=0), runs),
        "preprocessing": median_seconds(lambda: preprocess(images).numpy(), runs),
        "network (graph)": median_seconds(
            lambda: {k: v.numpy() for k, v in graph_network(inputs).items()}, runs
        ),
        "network": median_seconds(
            lambda: {k: v.numpy() for k, v in network(inputs).items()}, runs
        ),
        "decoding": median_seconds(
            lambda: {k: v.numpy() for k, v in decoder(dense).items()}, runs
        ),
    }
    row["overhead"] = row["predict"] - sum(
        row[k] for k in ("preprocessing", "network", "decoding")
    )
    row["detections"] = int(model.predict(rgb[None], verbose=0)["num_detections"][0])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["light_r18", "r50"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmark_output")
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    missing = mmdet_missing()
    if missing:
        raise SystemExit(f"needs the reference harness: {missing}")
    bgr = np.load(os.path.join(MMREF_OUT, "input.npy"))
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    image_path = os.path.join(tempfile.mkdtemp(), "image.npy")
    np.save(image_path, bgr)
    rows = {}
    for variant in args.variants:
        model = converted_model(variant)
        row = split(model, rgb, args.runs)
        theirs = run_mmdet("e2e", args, variant, image_path, MMREF_OUT)
        row["mmdetection"] = theirs["seconds"]
        row["mmdetection detections"] = theirs["detections"]
        row["resized"] = list(model.image_converter.resized_size(*rgb.shape[:2]))
        rows[variant] = row
        print(json.dumps({variant: row}), flush=True)
    print(
        f"\nCPU: {cpu_name()}; {args.threads} threads; medians of {args.runs} runs "
        "(seconds per image, batch 1)\n"
    )
    print(
        "| model | resized | mmdetection | predict (graph) | ratio | predict (XLA) "
        "| ratio | preprocessing | network (graph) | network (XLA) | decoding "
        "| XLA predict overhead |\n" + "|---" * 12 + "|"
    )
    for variant, r in rows.items():
        theirs = r["mmdetection"]
        print(
            f"| {variant} | {r['resized'][0]}x{r['resized'][1]} | {theirs:.3f} | "
            f"{r['predict (graph)']:.3f} | {r['predict (graph)'] / theirs:.2f}x | "
            f"{r['predict']:.3f} | {r['predict'] / theirs:.2f}x | "
            f"{r['preprocessing']:.3f} | {r['network (graph)']:.3f} | "
            f"{r['network']:.3f} | {r['decoding']:.3f} | {r['overhead']:.3f} |"
        )
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "predict_split.json"), "w") as f:
        json.dump({"cpu": cpu_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
