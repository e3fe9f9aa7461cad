"""keras-solov2 against mmdetection 3.3.0 on the same machine, weights and image.

    python benchmarks/vs_mmdet.py [--parts gemm nms flops train e2e scaling]
        [--variants light_r18 r50] [--runs 5] [--threads 2]
        [--int8-calibration 2] [--output benchmark_output]

Everything runs in this one job, on the same CPU threads; every figure is the
median of `--runs` runs after a warm-up run, and each comparison prints the
ratio ours / mmdetection's (below 1: ours is faster).

- `gemm`: the float32 matmul peak of this machine, a 2048x2048 GEMM in numpy
  and in `tf.linalg.matmul` (GFLOP/s, a multiply-add counted as 2): the
  yardstick for the network's efficiency.
- `nms`: Matrix NMS alone on the same random candidates (binary masks at
  200x272, scores, 80 classes; the SOLOv2 test settings: Gaussian kernel,
  sigma 2, pre-NMS top 500, 100 kept, filter 0.05): ours
  (`keras_solov2.layers.MatrixNMS`, a compiled function) against
  mmdetection's `mask_matrix_nms` (PyTorch), at 100, 250, 500, 1000 and
  2000 candidates (top-k off above 500 so that the work grows).
- `flops`: the network's FLOPs at the test-scale canvas (light R18
  448x608, R50 800x1088), counted from the frozen graph by TF's profiler,
  divided by its time alone (TF graph and XLA) and by the whole
  `predict`'s, as a percentage of the GEMM peak.
- `train`: one training step of light R18 (forward, loss, backward, SGD
  update), batch 2 at 448x608 with 8 rectangles per image: ours
  (`train_on_batch`, TF graph and XLA) against mmdetection's `loss`,
  backward and `torch.optim.SGD` on the same batch, each in its own process
  with its peak RSS. Both print their first step's losses (the same weights
  and batch give the same numbers). A `keras bfloat16` row trains with
  `dtype="mixed_bfloat16"` (float32 variables, loss and decoding) on CPUs
  with AVX-512 BF16 or AMX.
- `scaling`: Keras `predict` and mmdetection end to end at test scales
  whose short side is 320 to 1333 (long side capped at 5/3 of it), for each
  `--variants` model, on a plot.
- `e2e`: one image end to end, batch 1, from the uint8 image to the
  detections with masks at the original size: mmdetection's
  `inference_detector` (its test pipeline, PyTorch CPU), ours as Keras
  `model.predict` (TF graph, with and without XLA) and as the float32 `.tflite`
  (`keras_solov2.export.LiteRTPredictor`: letterbox, XNNPACK, and the paste of
  the kept masks), and so as the dynamic-range int8 and the full int8 file
  (calibrated on `--int8-calibration` COCO photos; its accuracy loss is
  `benchmarks/export.py accuracy`'s table in the README), and the `.onnx`
  of the same graph in ONNX Runtime's CPU provider (`--threads` intra-op
  threads, one inter-op thread; the same letterbox and paste around it;
  skipped without onnxruntime, `pip install '.[onnx]'`), and Keras `predict`
  with `dtype="mixed_bfloat16"` (the network in bfloat16, the decoding in
  float32; only on CPUs with AVX-512 BF16 or AMX), with its agreement with
  float32 on the image (same-label matches by mask IoU). The image is the
  reference harness's 480x640 photo, resized by the test pipeline to
  448x597 (light R18) and 800x1067 (R50).

The weights are the harness's (../shared/reference/mmdet, random, seed 0),
converted with our converter, so both sides compute the same detections.
mmdetection runs in the harness's venv (`$MMREF_ROOT`, default /tmp/mmref:
run the harness's setup.sh and ref.py once, or the parity tests, to create
it); without it, its column says why and stays empty.

Writes `results.json` and, with matplotlib, `speed_vs_mmdet.png` under
`--output`.

Measurements (2-core Intel Xeon, Sapphire Rapids class, KVM; TensorFlow 2.21,
PyTorch 2.13; medians of 5, nothing else running; the README has the tables):
GEMM 170 GFLOP/s (numpy) and 192 (TF). Matrix NMS ours / mmdetection at 500
candidates: 170 / 341 ms (0.50x). End to end, s (ratio to mmdetection): light
R18 at 448x597: mmdetection 0.97, Keras 1.21 (1.25x), XLA 1.09 (1.12x), TFLite
fp32 1.63 (1.69x), dyn int8 0.90 (0.93x), int8 1.40 (1.44x), ONNX Runtime 1.48
(1.53x), Keras bfloat16 0.74 (0.77x); R50 at 800x1067: mmdetection 6.36, Keras
4.70 (0.74x), XLA 4.00 (0.63x), TFLite fp32 5.83 (0.92x), dyn int8 3.51
(0.55x), int8 3.63 (0.57x), ONNX Runtime 4.74 (0.74x), bfloat16 2.76 (0.43x).
Network share of the GEMM peak: light R18 75% (graph and XLA), R50 62% / 75%;
whole predict 40% and 50%. Training step: 2.79 s against 3.41 s (0.82x),
bfloat16 1.74 s (0.51x). mmdetection's light R18 time varied from 0.97 to
1.31 s across runs on this machine: compare within one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import (  # noqa: E402
    COCO_MINI,
    calibration_images,
    cpu_name,
    median_seconds,
)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # detection_match
HARNESS = os.path.join(HERE, "..", "..", "shared", "reference", "mmdet")
MMREF_ROOT = os.environ.get("MMREF_ROOT", "/tmp/mmref")
MMREF_PYTHON = os.path.join(MMREF_ROOT, "venv", "bin", "python")
MMREF_OUT = os.path.join(MMREF_ROOT, "out")
TFLITE_COLUMNS = {
    "tflite fp32": None,
    "tflite dyn int8": "dynamic_int8",
    "tflite int8": "int8",
}
ONNX_COLUMN = "ONNX Runtime fp32"
BF16_COLUMN = "keras bfloat16"
PRESETS = {"light_r18": "light_r18_coco", "r50": "r50_coco"}
NMS_COUNTS = (100, 250, 500, 1000, 2000)
NMS_SIZE = (200, 272)
# The test-scale canvases for the FLOP count (padded to 32).
TEST_CANVAS = {"light_r18": (448, 608), "r50": (800, 1088)}

# The mmdetection side, run by the harness's Python. `import ref` installs
# the harness's stub for mmcv-lite's missing compiled ops (none is called).
MMDET_CHILD = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])  # the harness; PYTHONPATH has benchmarks/
    import numpy as np, torch
    import ref  # noqa: F401
    from common import median_seconds
    part, out = sys.argv[2], sys.argv[5]
    runs, threads = int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)

    result = {"torch": torch.__version__}
    if part == "nms":
        from mmdet.models.layers import mask_matrix_nms
        data = np.load(sys.argv[6])
        for n in json.loads(sys.argv[7]):
            masks = torch.from_numpy(data["masks"][:n])
            labels = torch.from_numpy(data["labels"][:n]).long()
            scores = torch.from_numpy(data["scores"][:n])
            top = 500 if n <= 500 else -1
            def run():
                with torch.no_grad():
                    mask_matrix_nms(masks, labels, scores, filter_thr=0.05,
                                    nms_pre=top, max_num=100, kernel="gaussian",
                                    sigma=2.0)
            result[str(n)] = median_seconds(run, runs)
    elif part == "train":
        from common import peak_rss_mib
        from mmdet.apis import init_detector
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData
        folder = os.path.join(sys.argv[8], sys.argv[6])
        model = init_detector(os.path.join(folder, "config.py"),
                              os.path.join(folder, "ckpt.pth"), device="cpu")
        model.train()
        data = np.load(sys.argv[7])
        h, w = data["images"].shape[1:3]
        inputs, samples = [], []
        for b in range(len(data["images"])):
            bgr = data["images"][b][..., ::-1].transpose(2, 0, 1)
            inputs.append(torch.from_numpy(np.ascontiguousarray(bgr)))
            sample = DetDataSample(metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                scale_factor=(1.0, 1.0)))
            keep = data["labels"][b] >= 0
            sample.gt_instances = InstanceData(
                bboxes=torch.from_numpy(data["boxes"][b][keep]),
                labels=torch.from_numpy(data["labels"][b][keep]).long(),
                masks=BitmapMasks(data["masks"][b][keep], h, w))
            samples.append(sample)
        sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        def step():
            batch = model.data_preprocessor(
                dict(inputs=inputs, data_samples=samples), True)
            losses = model.loss(batch["inputs"], batch["data_samples"])
            sgd.zero_grad()
            sum(losses.values()).backward()
            sgd.step()
            return {k: float(v.detach()) for k, v in losses.items()}
        result["first losses"] = step()
        result["seconds"] = median_seconds(step, runs)
        result["peak rss MiB"] = peak_rss_mib()
    elif part == "scaling":
        from mmdet.apis import inference_detector, init_detector
        variant, image = sys.argv[6], np.load(sys.argv[7])
        folder = os.path.join(sys.argv[8], variant)
        model = init_detector(os.path.join(folder, "config.py"),
                              os.path.join(folder, "ckpt.pth"), device="cpu")
        for short in json.loads(sys.argv[9]):
            scale = (short * 5 // 3, short)  # the short side governs
            for step in model.cfg.test_dataloader.dataset.pipeline:
                if step["type"] == "Resize":
                    step["scale"] = scale
            with torch.no_grad():
                result[str(short)] = median_seconds(
                    lambda: inference_detector(model, image), runs)
    else:
        from mmdet.apis import inference_detector, init_detector
        variant, image = sys.argv[6], np.load(sys.argv[7])
        folder = os.path.join(sys.argv[8], variant)
        model = init_detector(os.path.join(folder, "config.py"),
                              os.path.join(folder, "ckpt.pth"), device="cpu")
        with torch.no_grad():
            result["seconds"] = median_seconds(
                lambda: inference_detector(model, image), runs)
            result["detections"] = int(
                len(inference_detector(model, image).pred_instances.scores))
    with open(out, "w") as f:
        json.dump(result, f)
    """
)


def mmdet_missing():
    """Why mmdetection cannot run here, or `None`."""
    if not os.path.isdir(HARNESS):
        return f"no reference harness at {os.path.normpath(HARNESS)}"
    if not os.path.exists(MMREF_PYTHON):
        return (
            f"no harness venv at {MMREF_PYTHON}: run `bash setup.sh` in "
            f"{os.path.normpath(HARNESS)} (or the parity tests)"
        )
    return None


def run_mmdet(part, args, *extra):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    command = [
        MMREF_PYTHON,
        "-c",
        MMDET_CHILD,
        os.path.abspath(HARNESS),
        part,
        str(args.runs),
        str(args.threads),
        out,
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=HERE)  # benchmarks/common.py
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"mmdetection {part} failed:\n{result.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


def ratio(ours, theirs):
    return "" if theirs is None else f"{ours / theirs:.2f}x"


def gemm(args):
    import tensorflow as tf

    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype("float32")
    flops = 2.0 * n**3
    numpy_s = median_seconds(lambda: a @ a, args.runs)
    ta = tf.constant(a)
    tf_s = median_seconds(lambda: tf.linalg.matmul(ta, ta).numpy(), args.runs)
    rows = {"numpy": flops / numpy_s / 1e9, "tf.linalg.matmul": flops / tf_s / 1e9}
    print(f"\n## float32 GEMM peak ({n}x{n}, {args.threads} threads)\n")
    print("| | GFLOP/s |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} |")
    return rows


def nms_candidates(count, seed=0):
    """Random blobs as binary masks, with scores and labels, sorted by score."""
    rng = np.random.default_rng(seed)
    h, w = NMS_SIZE
    ys, xs = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0, h, count), rng.uniform(0, w, count)
    ry, rx = rng.uniform(8, 60, count), rng.uniform(8, 60, count)
    masks = (
        ((ys[None] - cy[:, None, None]) / ry[:, None, None]) ** 2
        + ((xs[None] - cx[:, None, None]) / rx[:, None, None]) ** 2
    ) <= 1.0
    scores = np.sort(rng.uniform(0.1, 1.0, count).astype("float32"))[::-1]
    labels = rng.integers(0, 80, count).astype("int32")
    return masks, labels, np.ascontiguousarray(scores)


def nms(args, missing):
    import keras

    from keras_solov2.layers import MatrixNMS

    masks, labels, scores = nms_candidates(max(NMS_COUNTS))
    ours = {}
    for n in NMS_COUNTS:
        layer = MatrixNMS(
            sigma=2.0,
            filter_threshold=0.05,
            pre_nms_top_k=500 if n <= 500 else -1,
            max_detections=100,
        )
        inputs = [masks[None, :n], labels[None, :n], scores[None, :n]]
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            fn = tf.function(lambda m, lab, s, layer=layer: layer(m, lab, s))
            tensors = [tf.constant(x) for x in inputs]
            ours[n] = median_seconds(
                lambda fn=fn, t=tensors: fn(*t)["scores"].numpy(), args.runs
            )
        else:
            import jax

            fn = jax.jit(lambda m, lab, s, layer=layer: layer(m, lab, s))
            ours[n] = median_seconds(
                lambda fn=fn, x=inputs: fn(*x)["scores"].block_until_ready(), args.runs
            )
    theirs = {}
    if missing is None:
        with tempfile.NamedTemporaryFile(suffix=".npz", delete=False) as f:
            path = f.name
        np.savez(path, masks=masks, labels=labels, scores=scores)
        result = run_mmdet("nms", args, path, json.dumps(list(NMS_COUNTS)))
        theirs = {n: result[str(n)] for n in NMS_COUNTS}
    print(f"\n## Matrix NMS alone, masks {NMS_SIZE[0]}x{NMS_SIZE[1]} (ms)\n")
    note = "" if missing is None else f" ({missing})"
    print(f"| candidates | ours | mmdetection{note} | ratio |\n|---|---|---|---|")
    for n in NMS_COUNTS:
        t = theirs.get(n)
        print(
            f"| {n} | {ours[n] * 1e3:.1f} | "
            f"{'' if t is None else f'{t * 1e3:.1f}'} | {ratio(ours[n], t)} |"
        )
    return {"ours": ours, "mmdetection": theirs}


def converted_model(variant, dtype=None):
    """Our model with the harness's mmdetection checkpoint, converted
    (`dtype="mixed_bfloat16"`: bfloat16 compute, float32 variables)."""
    import keras_solov2
    from keras_solov2.convert import load_mmdet_state_dict
    from keras_solov2.convert.torch_checkpoint import load_state_dict

    model = keras_solov2.SOLOv2.from_preset(
        PRESETS[variant], load_weights=False, dtype=dtype
    )
    state, _, refused = load_state_dict(os.path.join(MMREF_OUT, variant, "ckpt.pth"))
    if refused:
        raise SystemExit(f"the harness checkpoint has refused entries: {refused}")
    load_mmdet_state_dict(model, state)
    return model


def forward_flops(model, size):
    """FLOPs of one forward of the network (no resize, no decoding) on a
    `size` canvas, counted from its frozen TensorFlow graph by TF's profiler
    (a multiply-add as 2, as the issue's 86 GFLOP for light R18 at 448x608)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, *size, 3), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return float(info.total_float_ops)


def efficiency(args, peak):
    """The network's GFLOP at the test scale, its time alone (TF graph and
    XLA), and both as a share of the GEMM peak; also the whole `predict`."""
    import keras
    import tensorflow as tf

    rows = {}
    print(f"\n## Hardware efficiency (GEMM peak {peak:.0f} GFLOP/s)\n")
    print(
        "| model | canvas | GFLOP | network s | % peak | network XLA s | % peak "
        "| predict s | % peak |\n|---|---|---|---|---|---|---|---|---|"
    )
    bgr = np.load(os.path.join(MMREF_OUT, "input.npy"))
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    for variant in args.variants:
        model = converted_model(variant)
        size = TEST_CANVAS[variant]
        flops = forward_flops(model, size)
        x = tf.constant(np.random.default_rng(0).normal(0, 1, (1, *size, 3)), "float32")
        row = {"canvas": list(size), "gflop": flops / 1e9}
        for jit in (False, True):
            fn = tf.function(lambda x, m=model: m(x, training=False), jit_compile=jit)
            row["network XLA s" if jit else "network s"] = median_seconds(
                lambda fn=fn, x=x: fn(x)["mask_features"].numpy(), args.runs
            )
        model.compile(jit_compile=False)
        row["predict s"] = median_seconds(
            lambda m=model: m.predict(rgb[None], verbose=0), args.runs
        )
        row["predict size"] = list(model.image_converter.resized_size(*rgb.shape[:2]))
        cells = [variant, "x".join(map(str, size)), f"{row['gflop']:.0f}"]
        for key in ("network s", "network XLA s", "predict s"):
            # The predict share counts the network's FLOPs at the canvas of
            # the photo (its padded resized size), scaled by area.
            work = flops
            if key == "predict s":
                padded = [-(-v // 32) * 32 for v in row["predict size"]]
                work = flops * padded[0] * padded[1] / (size[0] * size[1])
            share = 100.0 * work / row[key] / 1e9 / peak
            row[key.replace(" s", " % peak")] = share
            cells += [f"{row[key]:.2f}", f"{share:.0f}%"]
        print("| " + " | ".join(cells) + " |", flush=True)
        rows[variant] = row
        keras.backend.clear_session()
    return rows


# Our side of the training step, in its own process so that its peak RSS
# is its own: the converted checkpoint, SGD (momentum 0.9), train_on_batch.
OURS_TRAIN_CHILD = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np, tensorflow as tf
    import keras
    from vs_mmdet import converted_model
    from common import median_seconds, peak_rss_mib
    variant, path, runs, threads, jit, out, dtype = sys.argv[1:8]
    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    model = converted_model(variant, None if dtype == "float32" else dtype)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  jit_compile=jit == "1")
    data = np.load(path)
    x = data["images"].astype("float32")
    y = {k: data[k] for k in ("masks", "labels", "boxes")}
    first = model.train_on_batch(x, y, return_dict=True)
    seconds = median_seconds(lambda: model.train_on_batch(x, y), int(runs))
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "peak rss MiB": peak_rss_mib(),
                   "first losses": {k: float(v) for k, v in first.items()}}, f)
    """
)


def training_batch(batch=2, size=(448, 608), instances=8, seed=0):
    """A batch of random images with `instances` rectangles each (masks,
    labels, boxes), already at the padded canvas of the issue's scale."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = rng.integers(0, 256, (batch, h, w, 3)).astype("uint8")
    masks = np.zeros((batch, instances, h, w), np.uint8)
    labels = rng.integers(0, 80, (batch, instances)).astype("int32")
    boxes = np.zeros((batch, instances, 4), np.float32)
    for b in range(batch):
        for m in range(instances):
            y, x = rng.integers(0, h - 120), rng.integers(0, w - 160)
            bh, bw = rng.integers(30, 120), rng.integers(30, 160)
            masks[b, m, y : y + bh, x : x + bw] = 1
            boxes[b, m] = (x, y, x + bw, y + bh)
    return dict(images=images, masks=masks, labels=labels, boxes=boxes)


def train(args, missing):
    """One training step (forward, loss, backward, SGD update), batch 2."""
    path = os.path.join(tempfile.mkdtemp(), "batch.npz")
    np.savez(path, **training_batch())
    print("\n## One training step, light_r18, batch 2 at 448x608 (s, peak RSS)\n")
    note = "" if missing is None else f" ({missing})"
    print(f"| | s per step | ratio | peak RSS MiB |\n|---|---|---|---|{note}")
    rows = {}
    if missing is None:
        rows["mmdetection"] = run_mmdet("train", args, "light_r18", path, MMREF_OUT)
    theirs = rows.get("mmdetection", {}).get("seconds")
    modes = [("keras", "0", "float32"), ("keras XLA", "1", "float32")]
    if bfloat16_missing() is None:
        modes.append((BF16_COLUMN, "0", "mixed_bfloat16"))
    else:
        print(f"{BF16_COLUMN} row skipped: {bfloat16_missing()}")
    for name, jit, dtype in modes:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        command = [sys.executable, "-c", OURS_TRAIN_CHILD, "light_r18", path]
        command += [str(args.runs), str(args.threads), jit, out, dtype]
        env = dict(os.environ, PYTHONPATH=HERE)
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"our training step failed:\n{done.stderr[-3000:]}")
        with open(out) as f:
            rows[name] = json.load(f)
    for name, row in rows.items():
        ours = name != "mmdetection"
        print(
            f"| {name} | {row['seconds']:.2f} | "
            f"{ratio(row['seconds'], theirs) if ours else ''} | "
            f"{row['peak rss MiB']:.0f} |",
            flush=True,
        )
    print(
        "first-step losses: "
        + "; ".join(f"{n}: {r['first losses']}" for n, r in rows.items())
    )
    return rows


SCALING_SHORT_SIDES = (320, 480, 640, 800, 1024, 1333)


def scaling(args, missing):
    """End-to-end latency against the test scale's short side (the photo is
    resized up or down to it, the long side capped at 5/3 of it so that the
    short side governs), Keras `predict` against mmdetection."""
    import keras

    bgr = np.load(os.path.join(MMREF_OUT, "input.npy"))
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    image_path = os.path.join(tempfile.mkdtemp(), "image.npy")
    np.save(image_path, bgr)
    rows = {}
    print("\n## Latency against the test scale's short side (s per image)\n")
    print("| model | short side | mmdetection | keras | ratio |\n|---|---|---|---|---|")
    for variant in args.variants:
        model = converted_model(variant)
        model.compile(jit_compile=False)
        ours = {}
        for short in SCALING_SHORT_SIDES:
            model.test_scale = (short * 5 // 3, short)
            ours[short] = median_seconds(
                lambda m=model: m.predict(rgb[None], verbose=0), args.runs
            )
        theirs = {}
        if missing is None:
            sides = json.dumps(list(SCALING_SHORT_SIDES))
            result = run_mmdet("scaling", args, variant, image_path, MMREF_OUT, sides)
            theirs = {n: result[str(n)] for n in SCALING_SHORT_SIDES}
        for short in SCALING_SHORT_SIDES:
            t = theirs.get(short)
            print(
                f"| {variant} | {short} | {'' if t is None else f'{t:.2f}'} | "
                f"{ours[short]:.2f} | {ratio(ours[short], t)} |",
                flush=True,
            )
        rows[variant] = {"keras": ours, "mmdetection": theirs}
        keras.backend.clear_session()
    return rows


def print_e2e_header(args, missing, onnx_missing):
    print(f"\n## End to end, batch 1, {args.threads} threads (s per image)\n")
    note = "" if missing is None else f" ({missing})"
    onnx_note = "" if onnx_missing is None else f" ({onnx_missing})"
    print(
        f"| model | resized | mmdetection{note} | keras | ratio | keras XLA | ratio "
        "| tflite fp32 | ratio | tflite dyn int8 | ratio | tflite int8 | ratio "
        f"| {ONNX_COLUMN}{onnx_note} | ratio | {BF16_COLUMN} | ratio "
        "| bf16 agreement |\n" + "|---" * 18 + "|"
    )


def bfloat16_missing():
    """Why the bfloat16 column would say nothing here, or `None`.

    Without AVX-512 BF16 or AMX, oneDNN emulates bfloat16 and it is slower
    than float32: not a choice anyone would make on such a CPU.
    """
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return None
    return "skipped: this CPU has neither AVX-512 BF16 nor AMX (bfloat16 is emulated)"


def onnx_runtime_missing():
    """Why the ONNX Runtime column cannot run here, or `None`."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as error:
        return f"skipped: {error.name} is not installed, pip install '.[onnx]'"
    return None


def onnx_runtime_predictor(path, threads):
    """The `.onnx` behind `LiteRTPredictor`'s letterbox and mask paste (the
    TFLite columns' work around the network) in ONNX Runtime's CPU provider,
    `threads` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    from keras_solov2.export import LiteRTPredictor
    from keras_solov2.export.common import metadata_file

    class Predictor(LiteRTPredictor):
        def __init__(self):  # a session instead of LiteRT's interpreter
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(
                path, options, providers=["CPUExecutionProvider"]
            )
            self.names = [o.name for o in self.session.get_outputs()]
            with open(metadata_file(path)) as f:
                self.metadata = json.load(f)
            self.input_size = tuple(self.metadata["input"]["shape"][1:3])

        def run(self, canvas):
            outputs = self.session.run(None, {"image": canvas[None]})
            return dict(zip(self.names, outputs, strict=True))

    return Predictor()


def print_e2e_row(variant, row):
    theirs = row.get("mmdetection")
    cells = [
        variant,
        "x".join(map(str, row["size"])),
        "" if theirs is None else f"{theirs:.2f}",
    ]
    for key in ("keras", "keras XLA", *TFLITE_COLUMNS, ONNX_COLUMN, BF16_COLUMN):
        if key in row:
            cells += [f"{row[key]:.2f}", ratio(row[key], theirs)]
        else:
            cells += ["", ""]
    agreement = row.get("bf16 agreement")
    cells.append(
        ""
        if agreement is None
        else f"IoU {agreement['median_iou']:.3f}, {agreement['matched']} of "
        f"{agreement['reference']} matched, scores {agreement['median_score_diff']:.4f}"
    )
    print("| " + " | ".join(cells) + " |", flush=True)


def bfloat16_agreement(reference, candidate):
    """The bfloat16 model's detections against float32's on the same image:
    the median mask IoU of same-label matches, how many of float32's
    detections have one at IoU >= 0.5, and the median score difference."""
    from detection_match import match_detections

    match = match_detections(reference, candidate)
    ious = np.asarray(match["ious"])
    return {
        "median_iou": float(np.median(ious)) if ious.size else 1.0,
        "matched": int((ious >= 0.5).sum()),
        "reference": int(ious.size),
        "detections": int(np.asarray(candidate["num_detections"]).reshape(-1)[0]),
        "median_score_diff": float(np.median(match["score_diffs"]))
        if ious.size
        else 0.0,
    }


def e2e(args, missing):
    import keras

    from keras_solov2 import export
    from keras_solov2.export import LiteRTPredictor

    bgr = np.load(os.path.join(MMREF_OUT, "input.npy"))
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    rows = {}
    onnx_missing = onnx_runtime_missing()
    if onnx_missing:
        print(f"{ONNX_COLUMN} column {onnx_missing}")
    if bfloat16_missing():
        print(f"{BF16_COLUMN} column {bfloat16_missing()}")
    print_e2e_header(args, missing, onnx_missing)  # a row per model when measured
    for variant in args.variants:
        row = {}
        model = converted_model(variant)
        for jit in (False, True):
            model.compile(jit_compile=jit)
            seconds = median_seconds(
                lambda m=model: m.predict(rgb[None], verbose=0), args.runs
            )
            row["keras XLA" if jit else "keras"] = seconds
        reference = model.predict(rgb[None], verbose=0)
        detections = int(reference["num_detections"][0])
        model.compile(jit_compile=False)  # the export traces without XLA
        if bfloat16_missing() is None:
            half = converted_model(variant, "mixed_bfloat16")
            row[BF16_COLUMN] = median_seconds(
                lambda m=half: m.predict(rgb[None], verbose=0), args.runs
            )
            row["bf16 agreement"] = bfloat16_agreement(
                reference, half.predict(rgb[None], verbose=0)
            )
            del half
        resized = model.image_converter.resized_size(*rgb.shape[:2])
        padded = tuple(-(-v // 32) * 32 for v in resized)
        for name, quantization in TFLITE_COLUMNS.items():
            if quantization == "int8" and not args.int8_calibration:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{variant}.tflite")
                export.tflite(
                    model,
                    path,
                    input_size=padded,
                    quantization=quantization,
                    representative_data=(
                        calibration_images(COCO_MINI, args.int8_calibration)[0]
                        if quantization == "int8"
                        else None
                    ),
                    verbose=False,
                )
                predictor = LiteRTPredictor(path, num_threads=args.threads)
                row[name] = median_seconds(
                    lambda p=predictor: p.predict(rgb[None]), args.runs
                )
        if onnx_missing is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{variant}.onnx")
                export.onnx(model, path, input_size=padded, verbose=False)
                predictor = onnx_runtime_predictor(path, args.threads)
                row[ONNX_COLUMN] = median_seconds(
                    lambda p=predictor: p.predict(rgb[None]), args.runs
                )
        if missing is None:
            image_path = os.path.join(tempfile.mkdtemp(), "image.npy")
            np.save(image_path, bgr)
            result = run_mmdet("e2e", args, variant, image_path, MMREF_OUT)
            row["mmdetection"] = result["seconds"]
            row["mmdetection detections"] = result["detections"]
        row["detections"] = detections
        row["size"] = list(resized)
        rows[variant] = row
        print_e2e_row(variant, row)
        keras.backend.clear_session()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["gemm", "nms", "flops", "train", "e2e", "scaling"],
    )
    parser.add_argument("--variants", nargs="+", default=["light_r18", "r50"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--int8-calibration",
        type=int,
        default=2,
        help="images for the int8 export's calibration (0: no int8 column); "
        "TFLite calibrates with reference kernels, about 20 s per light R18 image",
    )
    parser.add_argument("--output", default="benchmark_output")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    missing = mmdet_missing()
    if missing is None and not os.path.exists(os.path.join(MMREF_OUT, "input.npy")):
        missing = f"no harness dumps at {MMREF_OUT}: run ref.py --out {MMREF_OUT}"
    print(f"CPU: {cpu_name()}; {args.threads} threads; medians of {args.runs} runs")
    if missing:
        print(f"mmdetection column skipped: {missing}")
    results = {"cpu": cpu_name(), "threads": args.threads, "runs": args.runs}
    if "gemm" in args.parts:
        results["gemm"] = gemm(args)
    if "nms" in args.parts:
        results["nms"] = nms(args, missing)
    if "flops" in args.parts:
        peak = results.get("gemm") or gemm(args)
        results["flops"] = efficiency(args, max(peak.values()))
    if "train" in args.parts:
        results["train"] = train(args, missing)
    if "scaling" in args.parts:
        results["scaling"] = scaling(args, missing)
    if "e2e" in args.parts:
        if not os.path.exists(os.path.join(MMREF_OUT, "input.npy")):
            raise SystemExit(
                f"e2e needs the harness's input.npy and checkpoints ({missing})"
            )
        results["e2e"] = e2e(args, missing)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    plot(results, args.output)


def plot(results, output):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    panels = [k for k in ("nms", "e2e", "scaling") if k in results]
    if not panels:
        return
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels), 4), squeeze=False
    )
    for ax, key in zip(axes[0], panels, strict=True):
        if key == "nms":
            data = results["nms"]
            for name, series in data.items():
                if series:
                    counts = sorted(series)
                    ax.plot(counts, [series[c] * 1e3 for c in counts], "o-", label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("candidate masks")
            ax.set_ylabel("ms")
            ax.set_title("Matrix NMS")
        elif key == "scaling":
            for variant, series in results["scaling"].items():
                for name, style in (("keras", "o-"), ("mmdetection", "s--")):
                    points = sorted(series[name].items())
                    if points:
                        ax.plot(
                            *zip(*points, strict=True), style, label=f"{variant} {name}"
                        )
            ax.set_xlabel("test scale, short side (px)")
            ax.set_ylabel("s per image")
            ax.set_title("Latency against input size")
        else:
            data = results["e2e"]
            names = [
                "mmdetection",
                "keras",
                "keras XLA",
                *TFLITE_COLUMNS,
                ONNX_COLUMN,
                BF16_COLUMN,
            ]
            width = 0.8 / len(names)
            for i, name in enumerate(names):
                values = [row.get(name, 0) or 0 for row in data.values()]
                ax.bar(np.arange(len(data)) + i * width, values, width, label=name)
            ax.set_xticks(np.arange(len(data)) + 0.4 - width / 2, list(data))
            ax.set_ylabel("s per image")
            ax.set_title("End to end, batch 1")
        ax.legend()
    fig.suptitle(results["cpu"])
    fig.tight_layout()
    path = os.path.join(output, "speed_vs_mmdet.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
