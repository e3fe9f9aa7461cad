"""Export: TFLite / LiteRT with Matrix NMS inside, and SavedModel.

Every exported model runs in LiteRT's interpreter (or, for the SavedModel,
in a process without keras_solov2) and is compared with Keras on the same
input. The quantized files are in test_export_quantization.py, LiteRT's GPU
accelerator in test_export_gpu.py, the CLI and the desktop example in
test_export_cli.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tflite_files  # noqa: F401  (skips this file without ai-edge-litert)
from detection_match import match_detections
from helpers import IMAGE_SIZE, keras_features, run_interpreter, sample_image
from tflite_files import litert, ops_and_ranks

import keras_solov2
from keras_solov2 import export
from keras_solov2.utils import image_geometry

pytestmark = pytest.mark.tflite


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


def test_litert_predictor_follows_predicts_contract_and_evaluates(
    model, exported, tmp_path
):
    from keras_solov2.evaluation import evaluate

    predictor = export.LiteRTPredictor(exported["end_to_end"])
    assert predictor.input_size == IMAGE_SIZE
    with pytest.warns(DeprecationWarning, match="it is LiteRTPredictor.input_size"):
        assert predictor.image_size == IMAGE_SIZE  # its old name, for one release
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
