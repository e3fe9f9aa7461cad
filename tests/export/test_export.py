"""Export: TFLite / LiteRT with Matrix NMS inside, and SavedModel.

Every exported model runs in LiteRT's interpreter (or, for the SavedModel,
in a process without keras_solov2) and is compared with Keras on the same
input. The GPU checks run LiteRT's real GPU accelerator on software Vulkan
(Mesa's lavapipe) in a subprocess that does not import TensorFlow.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from detection_match import match_detections
from helpers import (
    IMAGE_SIZE,
    REPO,
    TESTS,
    detecting_model,
    keras_features,
    run_interpreter,
    sample_image,
)

import keras_solov2
from keras_solov2 import export
from keras_solov2.utils import image_geometry

litert = pytest.importorskip(
    "ai_edge_litert.interpreter", reason="ai-edge-litert is not installed"
)
pytestmark = pytest.mark.tflite


def ops_and_ranks(path):
    interpreter = litert.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    ranks = {len(t["shape"]) for t in interpreter.get_tensor_details()}
    return ops, ranks


@pytest.fixture(scope="module")
def model():
    return detecting_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The float32 end-to-end and body files of the tiny model."""
    folder = tmp_path_factory.mktemp("tflite")
    return {
        "end_to_end": export.tflite(
            model, str(folder / "e2e.tflite"), input_size=IMAGE_SIZE, verbose=False
        ),
        "body": export.tflite(
            model,
            str(folder / "body.tflite"),
            input_size=IMAGE_SIZE,
            include_postprocessing=False,
            verbose=False,
        ),
    }


def test_float32_tflite_gives_the_same_detections_as_keras(model, exported):
    image = sample_image()
    expected = keras_features(model, image)
    got = run_interpreter(exported["end_to_end"], image)
    assert set(got) == set(export.OUTPUT_NAMES)
    n = int(expected["num_detections"][0])
    assert n >= 20, "the test model must detect something to compare"
    assert int(got["num_detections"][0]) == n
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-3)
    match = match_detections(
        expected, {**got, "mask_probs": got["masks"]}, "mask_probs"
    )
    assert match["ious"].min() >= 0.99
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-3)


def test_input_masks_are_the_pasted_masks_of_the_first_slots(model, exported):
    from keras_solov2.layers import paste_masks

    got = run_interpreter(exported["end_to_end"], sample_image())
    slots = got["input_masks"].shape[1]
    n = min(int(got["num_detections"][0]), slots)
    assert n >= 10, "the test model must fill the slots to compare"
    # paste_masks for an image that is the (unpadded) input itself.
    expected = np.asarray(
        paste_masks(got["masks"], IMAGE_SIZE, IMAGE_SIZE, model.mask_threshold)
    )[:, :slots]
    assert set(np.unique(got["input_masks"])) <= {0, 255}
    np.testing.assert_array_equal(got["input_masks"][:, :n] == 255, expected[:, :n])
    assert not got["input_masks"][:, n:].any()


def test_tflite_contract_static_rank4_builtins(model, exported):
    interpreter = litert.Interpreter(model_path=exported["end_to_end"])
    (signature,) = interpreter.get_signature_list()
    assert signature == "serving_default"
    runner = interpreter.get_signature_runner(signature)
    (image,) = runner.get_input_details().values()
    assert tuple(image["shape"]) == (1, *IMAGE_SIZE, 3)
    assert image["dtype"] == np.uint8
    outputs = runner.get_output_details()
    slots, feature = model.max_detections, (64 // 4, 96 // 4)
    want = {
        "masks": ((1, slots, *feature), np.float32),
        "labels": ((1, slots), np.int32),
        "scores": ((1, slots), np.float32),
        "boxes": ((1, slots, 4), np.float32),
        "num_detections": ((1,), np.int32),
        "candidates_overflow": ((1,), np.int32),
        "input_masks": ((1, min(16, slots), *IMAGE_SIZE), np.uint8),  # 16
    }
    assert {k: (tuple(v["shape"]), v["dtype"]) for k, v in outputs.items()} == want
    for path in exported.values():
        ops, ranks = ops_and_ranks(path)
        assert max(ranks) <= 4, f"{path}: tensor ranks {sorted(ranks)}"
        assert not [op for op in ops if op.startswith("Flex") or "VAR" in op], ops
        interpreter = litert.Interpreter(model_path=path)
        interpreter.allocate_tensors()
        # Static shapes: no -1 in any tensor's shape signature.
        for tensor in interpreter.get_tensor_details():
            assert -1 not in tensor["shape_signature"], tensor["name"]


def test_body_file_holds_the_dense_outputs(model, exported):
    image = sample_image()
    got = run_interpreter(exported["body"], image)
    assert set(got) == set(export.BODY_OUTPUT_NAMES)
    # The graph pads with the exact mean, as model.predict does.
    expected = model(
        image_geometry.pad_with_mean(
            image.astype("float32"), (64, 96), np, image_size=IMAGE_SIZE
        ),
        training=False,
    )
    for key in export.BODY_OUTPUT_NAMES:
        np.testing.assert_allclose(got[key], np.asarray(expected[key]), atol=1e-4)


@pytest.mark.parametrize(
    "quantization,min_iou,max_score_diff",
    [
        ("float16", 0.9, 0.02),
        ("dynamic_int8", 0.5, 0.1),
        # Calibration and the float conversion for the denylist: the slowest.
        pytest.param("int8", 0.3, 0.25, marks=pytest.mark.slow),
    ],
)
def test_quantized_models_run_with_builtins_and_agree_loosely(
    model, tmp_path, quantization, min_iou, max_score_diff
):
    path = str(tmp_path / f"{quantization}.tflite")
    rng = np.random.default_rng(5)
    calibration = (
        [rng.integers(0, 256, (50, 80, 3)).astype("uint8") for _ in range(4)]
        if quantization == "int8"
        else None
    )
    export.tflite(
        model,
        path,
        input_size=IMAGE_SIZE,
        quantization=quantization,
        representative_data=calibration,
        verbose=False,
    )
    ops, ranks = ops_and_ranks(path)
    assert not [op for op in ops if op.startswith("Flex") or "VAR" in op], ops
    image = sample_image()
    got = run_interpreter(path, image)
    for key, value in got.items():
        assert np.isfinite(value).all(), key
    expected = keras_features(model, image)
    match = match_detections(
        expected, {**got, "mask_probs": got["masks"]}, "mask_probs"
    )
    # Loose bounds on a random tiny model; the README reports a trained one.
    assert np.median(match["ious"]) >= min_iou, match
    assert np.median(match["score_diffs"]) <= max_score_diff, match


def test_saved_model_runs_without_keras_solov2_any_size(model, tmp_path):
    path = str(tmp_path / "saved")
    export.saved_model(model, path, verbose=False)
    rng = np.random.default_rng(2)
    batches = {
        "a": rng.integers(0, 256, (2, 50, 70, 3)).astype("uint8"),
        "b": rng.integers(0, 256, (1, 83, 41, 3)).astype("uint8"),
    }
    np.savez(tmp_path / "inputs.npz", **batches)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "served = tf.saved_model.load(sys.argv[1])\n"
        "fn = served.signatures['serving_default']\n"
        "inputs = np.load(sys.argv[2])\n"
        "out = {}\n"
        "for key in inputs.files:\n"
        "    for name, v in fn(images=tf.constant(inputs[key])).items():\n"
        "        out[key + '/' + name] = v.numpy()\n"
        "np.savez(sys.argv[3], **out)\n"
        "assert 'keras_solov2' not in sys.modules\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            path,
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "out.npz"),
        ],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
    )
    served = np.load(tmp_path / "out.npz")
    for key, images in batches.items():
        expected = model.predict(images, verbose=0)
        assert set(expected) == {n.split("/")[1] for n in served.files if n[0] == key}
        for name, value in expected.items():
            np.testing.assert_allclose(
                served[f"{key}/{name}"], value, atol=1e-4, err_msg=f"{key}/{name}"
            )
        assert expected["num_detections"].min() > 0


def test_model_export_routes_to_builtins_only_exporters(model, tmp_path):
    path = str(tmp_path / "m.tflite")
    model.export(path, format="litert", input_size=IMAGE_SIZE, verbose=False)
    ops, _ = ops_and_ranks(path)
    assert "TOPK_V2" in ops and not [op for op in ops if op.startswith("Flex")]
    interpreter = litert.Interpreter(model_path=path)
    assert set(interpreter.get_signature_list()["serving_default"]["outputs"]) == set(
        export.OUTPUT_NAMES
    )
    saved = str(tmp_path / "saved")
    model.export(saved, format="tf_saved_model", verbose=False)
    import tensorflow as tf

    signature = tf.saved_model.load(saved).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]


def test_export_arguments_are_checked(model, tmp_path):
    path = str(tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="quantization"):
        export.tflite(model, path, input_size=IMAGE_SIZE, quantization="int4")
    with pytest.raises(ValueError, match="representative_data"):
        export.tflite(model, path, input_size=IMAGE_SIZE, quantization="int8")
    with pytest.raises(ValueError, match="representative_data"):
        export.tflite(
            model, path, input_size=IMAGE_SIZE, representative_data=[sample_image()[0]]
        )
    with pytest.raises(ValueError, match=r"\.tflite"):
        export.tflite(model, str(tmp_path / "m.bin"), input_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="`input_size` must be"):
        export.tflite(model, path, input_size=(60,))
    with pytest.raises(ValueError, match="pass `input_size="):
        export.tflite(model, path)  # test_scale None: no default size
    with pytest.raises(ValueError, match="No images"):
        export.tflite(
            model,
            path,
            input_size=IMAGE_SIZE,
            quantization="int8",
            representative_data=str(tmp_path),
        )
    with pytest.raises(ValueError, match="input_signature"):
        model.export(path, format="litert", input_signature=[None])


def test_the_export_input_size_and_its_deprecated_name(model, tmp_path):
    """`input_size=` is the file's input; `image_size=`, its name before,
    still works for one release, with a DeprecationWarning, and its errors
    say `image_size`."""
    path = str(tmp_path / "old.tflite")
    with pytest.warns(DeprecationWarning, match="pass `input_size=`"):
        export.tflite(
            model,
            path,
            image_size=(64, 64),
            include_postprocessing=False,
            verbose=False,
        )
    with open(path + ".json") as f:
        assert json.load(f)["input"]["shape"] == [1, 64, 64, 3]
    with pytest.raises(TypeError, match="Pass `input_size` only"):
        export.tflite(model, path, input_size=IMAGE_SIZE, image_size=IMAGE_SIZE)
    for exporter, name in ((export.tflite, "m.tflite"), (export.onnx, "m.onnx")):
        with (
            pytest.warns(DeprecationWarning, match=exporter.__name__),
            pytest.raises(ValueError, match="`image_size` must be"),
        ):
            exporter(model, str(tmp_path / name), image_size=(60,))


def test_default_export_size_is_a_4_3_frame_at_the_test_scale():
    from keras_solov2.export.graphs import default_image_size

    light = keras_solov2.SOLOv2.from_preset("light_r18", load_weights=False)
    full = keras_solov2.SOLOv2.from_preset("r50", load_weights=False)
    assert default_image_size(light) == (448, 608)
    assert default_image_size(full) == (800, 1088)


def test_letterbox_keeps_the_ratio_and_pads_with_the_mean():
    image = np.full((300, 100, 3), 200, np.uint8)  # portrait
    canvas, scale, resized = export.letterbox(image, (60, 90))
    assert canvas.shape == (60, 90, 3) and canvas.dtype == np.uint8
    assert scale == pytest.approx(0.2) and resized == (60, 20)
    assert (canvas[:, :20] == 200).all()
    assert (canvas[:, 20:] == np.asarray(export.PAD_VALUE, np.uint8)).all()


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


def assert_same_detections(got, cpu, score_atol):
    n = int(cpu["num_detections"][0])
    assert int(got["num_detections"][0]) == n > 0
    np.testing.assert_array_equal(got["labels"], cpu["labels"])
    np.testing.assert_allclose(got["scores"], cpu["scores"], atol=score_atol)
    match = match_detections(cpu, got)
    assert match["ious"].min() >= 0.99, match
    # Pixels at the threshold may flip with the GPU's arithmetic.
    assert (got["input_masks"] != cpu["input_masks"]).mean() <= 1e-3


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


# ------------------------------------------------ the CLI and the example
def test_cli_export_and_the_desktop_example_agree_with_keras(model, tmp_path):
    from PIL import Image

    from keras_solov2.app import cli

    keras_file = str(tmp_path / "tiny.keras")
    model.save(keras_file)
    path = str(tmp_path / "tiny.tflite")
    cli.main(
        [
            "export",
            keras_file,
            "--format",
            "tflite",
            "--output",
            path,
            "--image-size",
            "64",
            "96",
        ]
    )
    with open(tmp_path / "tiny.tflite.json") as f:
        metadata = json.load(f)
    assert metadata["input"]["shape"] == [1, 64, 96, 3]
    assert metadata["outputs"] == list(export.OUTPUT_NAMES)
    assert metadata["class_names"] == model.class_names

    # An image of exactly the input size: the letterbox is the identity.
    image = np.random.default_rng(3).integers(0, 256, (64, 96, 3)).astype("uint8")
    image_file = str(tmp_path / "image.png")
    Image.fromarray(image).save(image_file)
    png = str(tmp_path / "masks.png")
    script = os.path.join(REPO, "examples", "tflite_predict.py")
    check = (
        "import runpy, sys\n"
        f"sys.argv = ['tflite_predict.py', {path!r}, {image_file!r}, "
        f"'--output', {png!r}]\n"
        "try:\n"
        f"    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules, 'the example imported TensorFlow'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = model.predict(image[None], verbose=0)
    n = int(expected["num_detections"][0])
    assert f"{n} detections" in result.stdout
    assert Image.open(png).size == (96, 64)

    sys.path.insert(0, os.path.dirname(script))
    try:
        import tflite_predict
    finally:
        sys.path.pop(0)
    detections, _ = tflite_predict.predict(path, Image.open(image_file))
    got = {
        "num_detections": [len(detections)],
        "labels": np.asarray([[d["label"] for d in detections]]),
        "scores": np.asarray([[d["score"] for d in detections]]),
        "masks": np.stack([d["mask"] for d in detections])[None],
    }
    match = match_detections(expected, got)
    # Pillow's bilinear resize against TensorFlow's: a few edge pixels.
    assert np.median(match["ious"]) >= 0.95, match
    assert match["score_diffs"].max() <= 1e-3
    # Boxes of the stride-4 masks: within a stride of the exact ones, except
    # where a random mask has isolated pixels that the upsampling loses.
    # Each detection against Keras's of the same label and nearest score
    # (after other sizes, Keras's relaxed trace may swap near-tied slots).
    boxes = np.asarray([d["box"] for d in detections])
    same = (
        np.asarray([d["label"] for d in detections])[:, None]
        == (expected["labels"][0, :n][None])
    )
    gaps = np.abs(got["scores"][0][:, None] - expected["scores"][0, :n][None])
    nearest = np.argmin(np.where(same, gaps, np.inf), axis=1)
    close = np.abs(boxes - expected["boxes"][0, nearest]) <= 4.5
    assert close.mean() >= 0.95, close.mean()


def test_cli_export_refuses_unknown_models_and_misplaced_options(tmp_path, capsys):
    from keras_solov2.app import cli

    assert (
        cli.main(["export", "nope", "--format", "tflite", "--output", "x.tflite"]) == 2
    )
    assert "neither a preset directory" in capsys.readouterr().err
    misplaced = ["export", "light_r18", "--format", "saved_model", "--output",
                 str(tmp_path / "s"), "--quantization", "float16"]  # fmt: skip
    assert cli.main(misplaced) == 2
    assert "tflite only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tflite only"):
        cli.main(["--verbose", *misplaced])


def test_litert_predictor_follows_predicts_contract_and_evaluates(
    model, exported, tmp_path
):
    from keras_solov2.evaluation import evaluate

    predictor = export.LiteRTPredictor(exported["end_to_end"])
    image = sample_image()
    got = predictor.predict(image)
    expected = model.predict(image, verbose=0)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape and got[key].dtype == value.dtype, key
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    assert match_detections(expected, got)["ious"].min() >= 0.99
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-3)

    # A portrait image twice the input size: letterboxed, masks pasted back.
    from keras_solov2.data import generate_shapes_dataset

    annotations = generate_shapes_dataset(
        str(tmp_path / "shapes"), 2, image_size=(120, 80), seed=3
    )
    report = evaluate(
        predictor, annotations, str(tmp_path / "shapes" / "images"), progress=False
    )
    assert 0.0 <= report["segm"]["AP"] <= 1.0
    big = np.random.default_rng(4).integers(0, 256, (2, 120, 80, 3)).astype("uint8")
    out = predictor.predict(big)
    assert out["masks"].shape == (2, model.max_detections, 120, 80)
    assert (out["boxes"][..., 2] <= 80).all() and (out["boxes"][..., 3] <= 120).all()


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


def test_calibration_images_come_from_every_kind_of_representative_data(tmp_path):
    import tensorflow as tf

    from keras_solov2.data import CocoDataset, generate_shapes_dataset
    from keras_solov2.export.tflite import _calibration_images

    annotations = generate_shapes_dataset(
        str(tmp_path / "s"), 3, image_size=(40, 30), seed=0
    )
    folder = str(tmp_path / "s" / "images")
    coco = CocoDataset(annotations, folder)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 30, 3)).astype("uint8")
    sources = {
        "folder": folder,
        "CocoDataset": coco,
        "tf.data batched": tf.data.Dataset.from_tensor_slices(pixels).batch(2),
        "tf.data (x, y)": tf.data.Dataset.from_tensor_slices((pixels, pixels[:, 0])),
        "tf.data dict": tf.data.Dataset.from_tensor_slices({"images": pixels}),
        "list": list(pixels),
    }
    for name, data in sources.items():
        images = list(_calibration_images(data, IMAGE_SIZE, limit=2))
        assert len(images) == 2, name
        for image in images:
            assert image.shape == (*IMAGE_SIZE, 3) and image.dtype == np.uint8, name
    # Portrait 40x30 in a 60x90 canvas: scaled x1.5 to 60x45, padded on the right.
    canvas = next(_calibration_images(list(pixels), IMAGE_SIZE, limit=1))
    assert (canvas[:, 45:] == np.asarray(export.PAD_VALUE, np.uint8)).all()
    with pytest.raises(ValueError, match="uint8"):
        list(_calibration_images([pixels[0].astype("float32")], IMAGE_SIZE, 1))
