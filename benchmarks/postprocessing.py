"""What the exported post-processing costs, and whether it runs on the GPU.

    python benchmarks/postprocessing.py speed [--models light_r18] [--runs 5]
        [--caps 384/192 192/96 128/64]
    python benchmarks/postprocessing.py gpu [--models light_r18 r50] [--caps 128/64]
    python benchmarks/postprocessing.py app [--runs 20]
    python benchmarks/postprocessing.py fp16 MODEL.keras ANNOTATIONS IMAGES

`speed`: for each model at its default export size (448x608 for the light
models, 800x1088 for the full ones), the float32 end-to-end `.tflite` and
its body-only file in LiteRT's CPU interpreter (XNNPACK, `--threads`),
timed in turn, medians of `--runs` runs after a warm-up; the
post-processing share is `1 - body / end-to-end`. Random weights with
`score_threshold=0` and `filter_threshold=0`: every slot is filled (the
cost of the static graph does not depend on the weights). `--caps` lists
`max_candidates/pre_nms_top_k` pairs to export and time, the decoder's
defaults (384/192) if none: what each pair saves, against what it risks
(`candidates_overflow`, docs/inference.md).

`gpu`: each end-to-end file compiled with LiteRT's GPU accelerator alone
(`HardwareAccelerator.GPU`; here Dawn on Mesa's software Vulkan, see
tests/export/test_export_gpu.py), in float32 (`enforce_f32`) and float16: whether it is
fully accelerated, and its detections against the CPU interpreter's (same
labels, largest score difference, smallest matched mask IoU). Timings on
software Vulkan say nothing about a phone and are not reported. `--caps`
as for `speed`.

`app`: the app's own work after the call, `read_detections` in
examples/tflite_predict.py, for 10 kept detections of a 480x640 frame
letterboxed to 448x608, against upsampling the stride-4 probabilities on
the host (the only way before `input_masks`).

`fp16`: a trained model (the demo's `demo_output/solov2_shapes.keras` on its
validation split) exported at its images' size: COCO mask AP of the file in
the CPU interpreter, and on LiteRT's GPU accelerator alone in float32 and
in float16 (as on a phone), the same letterbox and mask paste around each
(`keras_solov2.export.LiteRTPredictor`).

Each prints a markdown table and writes JSON under `--output`.
"""

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import cpu_name, median_seconds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "examples"))


def export_pair(name, folder, seed, caps=(), body=True):
    """The model, its body-only file (if `body`), an end-to-end file per
    caps pair (the decoder's defaults if none), and a random input."""
    import keras_solov2
    from keras_solov2 import export

    model = keras_solov2.SOLOv2.from_preset(
        name, load_weights=False, score_threshold=0.0, filter_threshold=0.0
    )
    size = export.graphs.default_image_size(model)
    caps = caps or [(model.max_candidates, model.pre_nms_top_k)]
    paths = {}
    if body:
        paths["body"] = export.tflite(
            model,
            os.path.join(folder, f"{name}-body.tflite"),
            include_postprocessing=False,
            verbose=False,
        )
    for candidates, into_nms in caps:
        model.max_candidates, model.pre_nms_top_k = candidates, into_nms
        paths[(candidates, into_nms)] = export.tflite(
            model,
            os.path.join(folder, f"{name}-{candidates}-{into_nms}.tflite"),
            verbose=False,
        )
    image = np.random.default_rng(seed).integers(0, 256, (1, *size, 3))
    return model, size, paths, image.astype("uint8")


def runner(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    return interpreter.get_signature_runner("serving_default")


def compiled_outputs(path, accelerator, inputs, out, precision):
    """`tests/litert_run.py`'s outputs: LiteRT's CompiledModel in a process
    without TensorFlow (with both loaded, the GPU accelerator segfaulted)."""
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tests", "litert_run.py"),
            path,
            accelerator,
            inputs,
            out,
            precision,
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise SystemExit(f"{path} on {accelerator} failed:\n{result.stderr[-3000:]}")
    return dict(np.load(out))


def speed(args):
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            model, size, paths, image = export_pair(name, tmp, 1, args.caps)
            runners = {part: runner(p, args.threads) for part, p in paths.items()}
            times = {part: [] for part in runners}
            for _ in range(args.runs):  # in turn, so that all see the same load
                for part, run in runners.items():
                    times[part].append(
                        median_seconds(lambda r=run, x=image: r(image=x), 1)
                    )
        body = np.median(times.pop("body"))
        for (candidates, into_nms), values in times.items():
            total = np.median(values)
            row = {
                "model": name,
                "input": f"{size[0]}x{size[1]}",
                "max_candidates": candidates,
                "pre_nms_top_k": into_nms,
                "body_s": body,
                "end_to_end_s": total,
                "postprocessing_ms": 1000 * (total - body),
                "postprocessing_share": 1 - body / total,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        f"CPU: {cpu_name()}, LiteRT interpreter (XNNPACK), {args.threads} threads, "
        f"medians of {args.runs} runs.",
        "",
        "| model | input | candidates / into NMS | body | end to end | "
        "post-processing | share |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['max_candidates']} / "
            f"{r['pre_nms_top_k']} | {r['body_s']:.3f} s | "
            f"{r['end_to_end_s']:.3f} s | {r['postprocessing_ms']:.1f} ms | "
            f"{100 * r['postprocessing_share']:.1f}% |"
        )
    report(args, "postprocessing_speed", rows, lines)


def gpu(args):
    from detection_match import match_detections

    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            _, size, paths, image = export_pair(name, tmp, 7, args.caps, body=False)
            np.save(os.path.join(tmp, "input.npy"), image)
            for caps, end_to_end in paths.items():
                cpu = runner(end_to_end, args.threads)(image=image)
                for precision in ("fp32", "fp16"):
                    out = os.path.join(tmp, f"{precision}.npz")
                    got = compiled_outputs(
                        end_to_end,
                        "gpu",
                        os.path.join(tmp, "input.npy"),
                        out,
                        precision,
                    )
                    match = match_detections(cpu, got)
                    n = int(cpu["num_detections"][0])
                    row = {
                        "model": name,
                        "caps": "/".join(map(str, caps)),
                        "input": f"{size[0]}x{size[1]}",
                        "precision": precision,
                        "fully_accelerated": bool(got["fully_accelerated"]),
                        "detections_cpu": n,
                        "detections_gpu": int(got["num_detections"][0]),
                        "same_labels": bool(
                            np.array_equal(got["labels"], cpu["labels"])
                        ),
                        "max_score_diff": float(
                            np.abs(got["scores"] - cpu["scores"]).max()
                        ),
                        "min_iou": float(match["ious"].min()),
                        "median_iou": float(np.median(match["ious"])),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    lines = [
        "LiteRT's GPU accelerator alone (WebGPU on Mesa's lavapipe), against the "
        "CPU interpreter; random weights, every slot filled.",
        "",
        "| model | input | caps | GPU precision | fully accelerated | "
        "detections (CPU / GPU) | same labels | max score diff | "
        "matched mask IoU (min / median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['caps']} | {r['precision']} | "
            f"{r['fully_accelerated']} | {r['detections_cpu']} / {r['detections_gpu']} "
            f"| {r['same_labels']} | {r['max_score_diff']:.1e} | "
            f"{r['min_iou']:.4f} / {r['median_iou']:.4f} |"
        )
    report(args, "postprocessing_gpu", rows, lines)


def app(args):
    import tflite_predict

    rng = np.random.default_rng(0)
    slots, size, frame = 100, (448, 608), (480, 640)
    scale = min(size[0] / frame[0], size[1] / frame[1])
    resized = (round(frame[0] * scale), round(frame[1] * scale))
    outputs = {
        "num_detections": np.asarray([10], np.int32),
        "labels": rng.integers(0, 80, (1, slots)).astype(np.int32),
        "scores": np.sort(rng.random((1, slots)).astype(np.float32))[:, ::-1],
        "boxes": (rng.random((1, slots, 4)) * 400).astype(np.float32),
        "masks": rng.random((1, slots, size[0] // 4, size[1] // 4)).astype(np.float32),
        "input_masks": (rng.random((1, 16, *size)) > 0.5).astype(np.uint8),
    }
    names = [str(i) for i in range(80)]

    def with_input_masks():
        return tflite_predict.read_detections(outputs, scale, resized, names, 0.5, 4)

    def host_upsample():
        no_input_masks = {**outputs, "input_masks": outputs["input_masks"][:, :0]}
        return tflite_predict.read_detections(
            no_input_masks, scale, resized, names, 0.5, 4
        )

    rows = []
    for label, fn in (
        ("input_masks (uint8 at the input size)", with_input_masks),
        ("stride-4 masks upsampled on the host", host_upsample),
    ):
        assert len(fn()) == 10
        seconds = median_seconds(fn, args.runs)
        rows.append({"method": label, "ms": 1000 * seconds})
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"CPU: {cpu_name()}; 10 detections, a 480x640 frame letterboxed to 448x608; "
        f"medians of {args.runs} runs of `read_detections` "
        "(examples/tflite_predict.py).",
        "",
        "| the app's work after the call | ms |",
        "|---|---|",
    ] + [f"| {r['method']} | {r['ms']:.3f} |" for r in rows]
    report(args, "postprocessing_app", rows, lines)


def fp16(args):
    import keras

    from keras_solov2 import export
    from keras_solov2.data import CocoDataset
    from keras_solov2.evaluation import evaluate
    from keras_solov2.io import load_image
    from keras_solov2.layers import SOLOv2Decoder

    model = keras.saving.load_model(args.model)
    # The decoder's current caps, whatever the file was saved with.
    defaults = inspect.signature(SOLOv2Decoder).parameters
    model.max_candidates = defaults["max_candidates"].default
    model.pre_nms_top_k = defaults["pre_nms_top_k"].default
    dataset = CocoDataset(args.annotations, args.images)
    images = [
        load_image(os.path.join(args.images, dataset.image_record(i)["file_name"]))
        for i in range(len(dataset))
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export.tflite(
            model, os.path.join(tmp, "m.tflite"), input_size=images[0].shape[:2]
        )
        size = export.LiteRTPredictor(path).input_size
        canvases = np.stack([export.letterbox(i, size)[0][None] for i in images])
        np.save(os.path.join(tmp, "canvases.npy"), canvases)
        for accelerator, precision in (
            ("cpu", "fp32"),
            ("gpu", "fp32"),
            ("gpu", "fp16"),
        ):
            out = os.path.join(tmp, f"{accelerator}-{precision}.npz")
            outputs = compiled_outputs(
                path, accelerator, os.path.join(tmp, "canvases.npy"), out, precision
            )
            full = bool(outputs.pop("fully_accelerated"))
            by_canvas = {
                canvases[i].tobytes(): {k: v[i] for k, v in outputs.items()}
                for i in range(len(images))
            }

            class Precomputed(export.LiteRTPredictor):
                def run(self, canvas, table=by_canvas):
                    return table[np.asarray(canvas, np.uint8)[None].tobytes()]

            stats = evaluate(
                Precomputed(path),
                args.annotations,
                args.images,
                iou_types=("segm",),
                progress=False,
            )["segm"]
            row = {
                "runtime": f"{accelerator} {precision}",
                "fully_accelerated": full,
                "AP": stats["AP"],
                "AP50": stats["AP50"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = rows[0]["AP"]
    lines = [
        f"{args.model} on {len(images)} images of {args.images}; "
        "the same .tflite (float32 weights) on each runtime.",
        "",
        "| runtime | fully accelerated | mask AP | AP50 | AP - CPU's |",
        "|---|---|---|---|---|",
    ] + [
        f"| {r['runtime']} | {r['fully_accelerated']} | {r['AP']:.4f} | "
        f"{r['AP50']:.4f} | {r['AP'] - base:+.4f} |"
        for r in rows
    ]
    report(args, "postprocessing_fp16", rows, lines)


def report(args, stem, rows, lines):
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, f"{stem}.json"), "w") as f:
        json.dump(
            {"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "rows": rows},
            f,
            indent=1,
        )
    print("\n".join(lines))


def caps_pair(text):
    try:
        candidates, into_nms = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MAX_CANDIDATES/PRE_NMS_TOP_K such as 384/192, got {text!r}"
        ) from None
    if candidates < 1 or into_nms < 1:
        raise argparse.ArgumentTypeError(f"caps must be positive, got {text!r}")
    return candidates, into_nms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("speed", "gpu", "app", "fp16"))
    parser.add_argument("model", nargs="?", help="fp16: a trained .keras file")
    parser.add_argument("annotations", nargs="?", help="fp16: COCO json")
    parser.add_argument("images", nargs="?", help="fp16: the image folder")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--caps",
        nargs="+",
        type=caps_pair,
        default=[],
        metavar="C/N",
        help="speed, gpu: max_candidates/pre_nms_top_k pairs (default: the decoder's)",
    )
    parser.add_argument("--output", default="benchmark_output")
    args = parser.parse_args()
    if args.models is None:
        args.models = ["light_r18", "r50"] if args.mode == "gpu" else ["light_r18"]
    if args.runs is None:
        args.runs = 20 if args.mode == "app" else 5
    if args.mode == "fp16" and not (args.model and args.annotations and args.images):
        parser.error("fp16 needs MODEL.keras ANNOTATIONS IMAGES")
    {"speed": speed, "gpu": gpu, "app": app, "fp16": fp16}[args.mode](args)


if __name__ == "__main__":
    main()
