"""Export: the TFLite files on LiteRT's GPU accelerator.

The GPU checks run LiteRT's real GPU accelerator on software Vulkan
(Mesa's lavapipe) in a subprocess that does not import TensorFlow.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tflite_files  # noqa: F401  (skips this file without ai-edge-litert)
from detection_match import match_detections
from helpers import IMAGE_SIZE, TESTS, run_interpreter, sample_image

import keras_solov2
from keras_solov2 import export

pytestmark = pytest.mark.tflite


# ------------------------------------------------- LiteRT's GPU accelerator
def vulkan_icd():
    return glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json")


def need_gpu_accelerator():
    if vulkan_icd():
        return
    message = (
        "no Vulkan driver for LiteRT's GPU accelerator: install Mesa's lavapipe "
        "from bookworm-backports (see ../shared/reference/ENVIRONMENT.md or "
        ".ci/run: apt-get install -t bookworm-backports mesa-vulkan-drivers "
        "libvulkan1)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_compiled(path, accelerator, image, tmp_path, precision="fp16"):
    """LiteRT's CompiledModel in a process without TensorFlow."""
    np.save(tmp_path / "input.npy", image)
    out = tmp_path / f"out-{accelerator}-{precision}.npz"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(TESTS, "litert_run.py"),
            path,
            accelerator,
            str(tmp_path / "input.npy"),
            str(out),
            precision,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


def test_dense_body_runs_entirely_on_the_gpu_accelerator(exported, tmp_path):
    need_gpu_accelerator()
    image = sample_image()
    gpu = run_compiled(exported["body"], "gpu", image, tmp_path)
    assert bool(gpu.pop("fully_accelerated")), "some body ops left the GPU"
    cpu = run_interpreter(exported["body"], image)
    for key in export.BODY_OUTPUT_NAMES:
        # The GPU computes in float16: about 1% of each output's spread.
        error = np.abs(gpu[key] - cpu[key]).mean() / cpu[key].std()
        assert error < 0.02, (key, error)
    gpu32 = run_compiled(exported["body"], "gpu", image, tmp_path, "fp32")
    for key in export.BODY_OUTPUT_NAMES:
        np.testing.assert_allclose(gpu32[key], cpu[key], atol=1e-3)


def tie_order(got, cpu, score_atol):
    """For each of `got`'s slots, the `cpu` slot of the same detection.

    The same slot, or one of the same label whose score is within
    `score_atol`: random weights near-tie their scores, and the GPU's sums
    round differently, so such neighbours may come in either order. At the
    end of the list a near-tie may keep another candidate instead: `None`
    for such a slot (its score within `score_atol` of the CPU's lowest).
    """
    labels, scores = got["labels"][0], got["scores"][0]
    cpu_labels, cpu_scores = cpu["labels"][0], cpu["scores"][0]
    lowest = cpu_scores[int(cpu["num_detections"][0]) - 1]
    free = np.ones(len(cpu_labels), bool)
    order = []
    for k in range(int(got["num_detections"][0])):
        same = free & (cpu_labels == labels[k])
        same &= np.abs(cpu_scores - scores[k]) <= score_atol
        if not same.any():
            assert scores[k] <= lowest + score_atol, (
                f"slot {k}: label {labels[k]}, score {scores[k]}, no tied CPU slot"
            )
            order.append(None)
            continue
        j = k if same[k] else int(np.flatnonzero(same)[0])
        free[j] = False
        order.append(j)
    return order


def assert_same_detections(got, cpu, score_atol):
    n = int(cpu["num_detections"][0])
    assert int(got["num_detections"][0]) == n > 0
    np.testing.assert_allclose(got["scores"], cpu["scores"], atol=score_atol)
    order = tie_order(got, cpu, score_atol)
    # Tied neighbours aside, the same labels in the same slots.
    assert sum(j != k for k, j in enumerate(order)) <= 0.1 * n, order
    match = match_detections(cpu, got)
    clear = cpu["scores"][0, :n] > cpu["scores"][0, n - 1] + score_atol
    assert match["ious"][clear].min() >= 0.99, match
    # Pixels at the threshold may flip with the GPU's arithmetic.
    slots = got["input_masks"].shape[1]
    pairs = [(k, j) for k, j in enumerate(order[:slots]) if j is not None and j < slots]
    flipped = [
        (got["input_masks"][0, k] != cpu["input_masks"][0, j]).mean() for k, j in pairs
    ]
    assert len(pairs) >= min(slots, n) - 1 and np.mean(flipped) <= 1e-3, flipped


def test_end_to_end_file_runs_entirely_on_the_gpu_accelerator(exported, tmp_path):
    """Point NMS, the dynamic masks, Matrix NMS and top-k on the GPU alone.

    The test model's 387 cell-class scores are not a multiple of 4: with
    such a length LiteRT's GPU TOPK_V2 ranked values past the end of its
    input, and Matrix NMS kept detections that the CPU suppresses.
    """
    need_gpu_accelerator()
    image = sample_image()
    cpu = run_interpreter(exported["end_to_end"], image)
    gpu = run_compiled(exported["end_to_end"], "gpu", image, tmp_path, "fp32")
    assert bool(gpu.pop("fully_accelerated")), "some ops left the GPU"
    assert_same_detections(gpu, cpu, score_atol=1e-3)
    # In float16, as on a phone: near-tied random scores may swap, so only
    # loosely (the README reports a trained model's mask AP).
    half = run_compiled(exported["end_to_end"], "gpu", image, tmp_path, "fp16")
    n = int(cpu["num_detections"][0])
    assert abs(int(half["num_detections"][0]) - n) <= 0.1 * n
    assert np.median(match_detections(cpu, half)["ious"]) >= 0.9
    # The documented fallback for devices that refuse an op.
    mixed = run_compiled(exported["end_to_end"], "gpu+cpu", image, tmp_path, "fp32")
    assert_same_detections(mixed, cpu, score_atol=1e-4)
    print(json.dumps({"gpu detections": n}))


def layer_file(layer, shape, path):
    """A .tflite of `layer` alone, traced as the exporters trace the network."""
    import keras
    import tensorflow as tf

    from keras_solov2.layers.group_normalization import float16_safe_statistics

    def serve(x):
        with float16_safe_statistics():
            return {"y": layer(x)}

    archive = keras.export.ExportArchive()
    archive.track(layer)
    archive.add_endpoint(
        "serving_default", tf.function(serve), [tf.TensorSpec(shape, tf.float32)]
    )
    archive.write_out(str(path) + ".saved", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path) + ".saved")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, "wb") as f:
        f.write(converter.convert())
    return str(path)


def test_group_norm_keeps_its_accuracy_in_float16_on_the_gpu(tmp_path):
    """A trained model's conv outputs reach thousands: their sum over a
    112x152 map overflowed the GPU's float16 sum (the trained demo model's
    mask features were off by 15% of their spread, its mask AP fell from
    0.55 to 0.39). The exported statistics stay within 1%."""
    need_gpu_accelerator()
    from keras_solov2.layers import GroupNormalization4D

    shape = (1, 112, 152, 64)
    rng = np.random.default_rng(0)
    x = (rng.normal(300, 50, shape) * rng.uniform(0.1, 10, 64)).astype("float32")
    layer = GroupNormalization4D(groups=32)
    layer.build(shape)
    path = layer_file(layer, shape, tmp_path / "gn.tflite")
    expected = np.asarray(layer(x))
    half = run_compiled(path, "gpu", x, tmp_path, "fp16")
    assert bool(half.pop("fully_accelerated"))
    error = np.abs(half["y"] - expected).mean() / expected.std()
    assert error < 0.01, error


def test_input_masks_of_a_480x640_file_are_the_cpus_on_the_gpu(model, tmp_path):
    """16 masks of 480x640 in one uint8 output asked WebGPU for 76,800
    workgroups (the limit is 65,535) and came back as garbage: the file
    holds 13 there, as its sidecar says."""
    need_gpu_accelerator()
    size = (480, 640)
    path = export.tflite(
        model, str(tmp_path / "vga.tflite"), input_size=size, verbose=False
    )
    with open(path + ".json") as f:
        slots = json.load(f)["input_mask_slots"]
    assert slots == 13
    image = np.random.default_rng(5).integers(0, 256, (1, *size, 3)).astype("uint8")
    cpu = run_interpreter(path, image)
    assert cpu["input_masks"].shape == (1, slots, *size)
    assert int(cpu["num_detections"][0]) >= slots
    gpu = run_compiled(path, "gpu", image, tmp_path, "fp32")
    assert bool(gpu.pop("fully_accelerated"))
    assert (gpu["input_masks"] != cpu["input_masks"]).mean() <= 1e-3


@pytest.mark.slow
def test_light_r18_export_matches_keras_and_runs_on_the_gpu(tmp_path):
    """The real light R18 at its default export size, every slot filled."""
    model = keras_solov2.SOLOv2.from_preset(
        "light_r18", load_weights=False, score_threshold=0.0, filter_threshold=0.0
    )
    model.mask_resolution = "features"
    model.test_scale = None  # the file's input is the letterboxed image
    size = export.graphs.default_image_size(
        keras_solov2.SOLOv2.from_preset("light_r18", load_weights=False)
    )
    assert size == (448, 608)
    path = export.tflite(model, str(tmp_path / "r18.tflite"), input_size=size)
    image = np.random.default_rng(7).integers(0, 256, (1, *size, 3)).astype("uint8")
    expected = model.predict(image, verbose=0)
    got = run_interpreter(path, image)
    assert int(got["num_detections"][0]) == int(expected["num_detections"][0]) == 100
    match = match_detections(
        expected, {**got, "mask_probs": got["masks"]}, "mask_probs"
    )
    # Random weights give near-tied scores; the matched masks must still agree.
    assert np.median(match["ious"]) >= 0.99, match
    assert np.median(match["score_diffs"]) <= 1e-3, match

    need_gpu_accelerator()
    gpu = run_compiled(path, "gpu", image, tmp_path, "fp32")
    assert bool(gpu.pop("fully_accelerated")), "some light R18 ops left the GPU"
    assert_same_detections(gpu, got, score_atol=1e-3)
    body = export.tflite(
        model,
        str(tmp_path / "r18_body.tflite"),
        input_size=size,
        include_postprocessing=False,
    )
    gpu = run_compiled(body, "gpu", image, tmp_path)
    assert bool(gpu.pop("fully_accelerated")), "some light R18 body ops left the GPU"
    cpu = run_interpreter(body, image)
    for key in export.BODY_OUTPUT_NAMES:
        error = np.abs(gpu[key] - cpu[key]).mean() / cpu[key].std()
        assert error < 0.02, (key, error)


def test_caps_below_the_output_slots_stay_on_the_gpu(model, tmp_path):
    """`pre_nms_top_k` below `max_detections` (export --pre-nms-top-k 64 of
    a 100-slot model) pads the output slots: on the GPU alone too (as PAD
    and PADV2, that padding left the GPU)."""
    need_gpu_accelerator()
    path = str(tmp_path / "caps.tflite")
    settings = model.max_candidates, model.pre_nms_top_k
    model.max_candidates, model.pre_nms_top_k = 48, 24  # 100 slots
    try:
        export.tflite(model, path, input_size=IMAGE_SIZE, verbose=False)
    finally:
        model.max_candidates, model.pre_nms_top_k = settings
    image = sample_image()
    cpu = run_interpreter(path, image)
    assert int(cpu["num_detections"][0]) <= 24 < model.max_detections
    assert (cpu["labels"][0, 24:] == -1).all() and (cpu["scores"][0, 24:] == 0).all()
    gpu = run_compiled(path, "gpu", image, tmp_path, "fp32")
    assert bool(gpu.pop("fully_accelerated")), "some ops left the GPU"
    assert_same_detections(gpu, cpu, score_atol=1e-3)
