"""ONNX export: the `.tflite`'s end-to-end graph, run in ONNX Runtime's CPU provider.

Every file is run in `onnxruntime` and compared with Keras `predict` on the
same input. The expected values come from Keras or from TensorFlow's own
resize, never from the exporter.
"""

import contextlib
import io
import json
import os
import sys

import keras
import numpy as np
import pytest
from detection_match import match_detections
from helpers import IMAGE_SIZE, REPO, detecting_model, keras_features, sample_image

from keras_solov2 import export

ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')"
)
onnx = pytest.importorskip(
    "onnx", reason="onnx is not installed (pip install '.[onnx]')"
)
pytest.importorskip(
    "tf2onnx", reason="tf2onnx is not installed (pip install '.[onnx]')"
)

SLOTS = 100  # the tiny model's max_detections
# The .tflite's outputs (docs/android.md), in export.OUTPUT_NAMES order; the
# masks are at stride 4 of the 60 x 90 input padded to 64 x 96.
SHAPES = {"masks": (1, SLOTS, 16, 24), "labels": (1, SLOTS), "scores": (1, SLOTS),
          "boxes": (1, SLOTS, 4), "num_detections": (1,),
          "candidates_overflow": (1,), "input_masks": (1, 16, 60, 90)}  # fmt: skip
DTYPES = {"masks": np.float32, "scores": np.float32, "boxes": np.float32,
          "input_masks": np.uint8}  # fmt: skip
CONTRACT = {k: (v, DTYPES.get(k, np.int32)) for k, v in SHAPES.items()}


def run_onnx(path, image):
    """The file's outputs by name, on ONNX Runtime's CPU provider."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image}), strict=True))


def assert_same_detections(expected, got, min_detections=20):
    """Keras's detections and the file's: count, labels, scores, masks, boxes."""
    n = int(expected["num_detections"][0])
    assert n >= min_detections, "the test model must detect enough to compare"
    assert int(got["num_detections"][0]) == n
    assert np.isfinite(got["scores"]).all() and np.isfinite(got["boxes"]).all()
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-3)
    match = match_detections(
        expected, {**got, "mask_probs": got["masks"]}, "mask_probs"
    )
    assert match["ious"].min() >= 0.99, match["ious"]
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-3)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)  # 68 detections: empty slots to check too
    return detecting_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "e2e.onnx")
    return export.onnx(model, path, input_size=IMAGE_SIZE, verbose=False)


def test_onnx_runtime_gives_the_same_detections_as_keras(model, exported):
    image = sample_image()
    expected = keras_features(model, image)
    # Empty slots must score 0 as in Keras (tf2onnx's own Select lowering
    # made them NaN), so the model must leave some.
    assert int(expected["num_detections"][0]) < SLOTS
    assert_same_detections(expected, run_onnx(exported, image))


@pytest.mark.slow  # about 4 to 13 s; the default suite is near its limit
def test_grid_resizes_keep_their_size_where_float32_scales_round_down(model, tmp_path):
    # Padded to 64 x 608: the stride-32 level is 19 wide, resized to the
    # 3 x 3 grid; float32(3 / 19) * 19 < 3, so tf2onnx's `scales` Resize
    # gives 2 columns and the graph did not load.
    size = (60, 600)
    path = export.onnx(model, str(tmp_path / "wide.onnx"), input_size=size,
                       verbose=False)  # fmt: skip
    image = np.random.default_rng(4).integers(0, 256, (1, *size, 3)).astype("uint8")
    assert_same_detections(keras_features(model, image), run_onnx(path, image))


def test_onnx_contract_standard_ops_static_uint8_input(model, exported):
    proto = onnx.load(exported)
    domains = {n.domain for n in proto.graph.node}
    assert domains <= {"", "ai.onnx"}, domains
    assert [(i.domain, i.version) for i in proto.opset_import] == [("", 17)]
    onnx.checker.check_model(proto, full_check=True)
    # No deprecated Resize mode (TF's nearest resize as tf2onnx writes it).
    modes = {
        onnx.helper.get_attribute_value(a)
        for n in proto.graph.node
        if n.op_type == "Resize"
        for a in n.attribute
        if a.name == "coordinate_transformation_mode"
    }
    assert modes and b"tf_half_pixel_for_nn" not in modes, modes

    def signature(values):
        return {
            v.name: (
                tuple(d.dim_value if d.HasField("dim_value") else -1
                      for d in v.type.tensor_type.shape.dim),
                onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type),
            )
            for v in values
        }  # fmt: skip

    assert signature(proto.graph.input) == {"image": ((1, *IMAGE_SIZE, 3), np.uint8)}
    assert [o.name for o in proto.graph.output] == list(export.OUTPUT_NAMES)
    assert signature(proto.graph.output) == CONTRACT

    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert (image.name, image.type, image.shape) == (
        "image",
        "tensor(uint8)",
        [1, *IMAGE_SIZE, 3],
    )
    outputs = run_onnx(exported, sample_image())
    assert {k: (v.shape, v.dtype) for k, v in outputs.items()} == CONTRACT

    with open(exported + ".json") as f:
        metadata = json.load(f)
    assert metadata["format"] == "keras_solov2.onnx/1"
    assert metadata["opset"] == 17
    assert metadata["input"]["shape"] == [1, *IMAGE_SIZE, 3]
    assert metadata["input"]["pad_value"] == list(export.PAD_VALUE)
    assert metadata["outputs"] == list(export.OUTPUT_NAMES)
    assert metadata["class_names"] == model.class_names
    assert metadata["mask_threshold"] == model.mask_threshold


def test_nearest_resize_rewrite_picks_the_pixels_that_tensorflow_picks():
    import tensorflow as tf

    from keras_solov2.export.onnx import _replace_deprecated_resize

    helper = onnx.helper
    x = np.arange(7 * 9, dtype=np.float32).reshape(1, 1, 7, 9)
    for size in ((14, 18), (21, 27), (10, 13), (3, 4), (7, 9)):
        node = helper.make_node(
            "Resize",
            ["x", "", "", "sizes"],
            ["y"],
            mode="nearest",
            coordinate_transformation_mode="tf_half_pixel_for_nn",
            nearest_mode="floor",
        )
        graph = helper.make_graph(
            [node],
            "resize",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [helper.make_tensor("sizes", onnx.TensorProto.INT64, [4], [1, 1, *size])],
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        _replace_deprecated_resize(proto, helper)
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {"x": x})[0]
        expected = tf.image.resize(x[0].transpose(1, 2, 0), size, "nearest").numpy()
        np.testing.assert_array_equal(got[0, 0], expected[..., 0], err_msg=str(size))
        modes = [
            helper.get_attribute_value(a)
            for a in proto.graph.node[0].attribute
            if a.name == "coordinate_transformation_mode"
        ]
        assert modes == [b"half_pixel"]


@pytest.mark.slow  # about 4 to 13 s; the default suite is near its limit
def test_model_export_routes_onnx_and_takes_the_opset(model, tmp_path):
    path = str(tmp_path / "m.onnx")
    model.export(path, format="onnx", input_size=IMAGE_SIZE, opset=18, verbose=False)
    proto = onnx.load(path)
    assert [(i.domain, i.version) for i in proto.opset_import] == [("", 18)]
    image = sample_image()
    assert_same_detections(keras_features(model, image), run_onnx(path, image))
    with pytest.raises(ValueError, match="input_signature"):
        model.export(path, format="onnx", input_signature=[None])


@pytest.mark.slow  # about 4 to 13 s; the default suite is near its limit
def test_body_file_holds_the_dense_outputs(model, tmp_path):
    from keras_solov2.utils import image_geometry

    path = export.onnx(model, str(tmp_path / "body.onnx"), input_size=IMAGE_SIZE,
                       include_postprocessing=False, verbose=False)  # fmt: skip
    image = sample_image()
    got = run_onnx(path, image)
    assert list(got) == list(export.BODY_OUTPUT_NAMES)
    # Keras on the image padded with the exact mean, as the graph pads it.
    padded = image_geometry.pad_with_mean(
        image.astype("float32"), (64, 96), np, image_size=IMAGE_SIZE
    )
    dense = model(padded, training=False)
    for key, value in got.items():
        np.testing.assert_allclose(value, np.asarray(dense[key]), atol=1e-4)


@pytest.mark.slow  # about 4 to 13 s; the default suite is near its limit
def test_cli_exports_an_onnx_file_that_agrees_with_keras(model, tmp_path):
    from keras_solov2.app import cli

    keras_file = str(tmp_path / "tiny.keras")
    model.save(keras_file)
    path = str(tmp_path / "tiny.onnx")
    argv = ["export", keras_file, "--format", "onnx", "--output", path,
            "--input-size", "64", "96"]  # fmt: skip
    assert cli.main(argv) == 0
    with open(tmp_path / "tiny.onnx.json") as f:
        metadata = json.load(f)
    assert metadata["input"]["shape"] == [1, 64, 96, 3]
    assert metadata["class_names"] == model.class_names
    # An image of exactly the input size (a multiple of 32: no padding).
    image = np.random.default_rng(3).integers(0, 256, (1, 64, 96, 3)).astype("uint8")
    assert_same_detections(keras_features(model, image), run_onnx(path, image))


def test_the_docs_python_example_runs_the_file(model, exported, tmp_path):
    from PIL import Image

    doc = os.path.join(REPO, "docs", "onnx.md")
    with open(doc) as f:
        section = f.read().split("## 3.", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    line = 'MODEL, PHOTO = "solov2_light.onnx", "photo.jpg"\n'
    assert line in code
    # A photo of exactly the input size: the letterbox is the identity.
    image = sample_image()
    photo = str(tmp_path / "photo.png")
    Image.fromarray(image[0]).save(photo)
    code = code.replace(line, f"MODEL, PHOTO = {exported!r}, {photo!r}\n")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    lines = printed.getvalue().splitlines()
    expected = keras_features(model, image)
    n = int(expected["num_detections"][0])
    assert len(lines) == n
    assert model.class_names is None  # the example prints the label index
    assert lines[0].startswith(f"{int(expected['labels'][0, 0])} ")
    assert float(lines[0].split()[1]) == pytest.approx(
        expected["scores"][0, 0], abs=1e-3
    )


def test_onnx_arguments_are_checked(model, tmp_path, capsys):
    from keras_solov2.app import cli

    path = str(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"\.onnx"):
        export.onnx(model, str(tmp_path / "m.tflite"), input_size=IMAGE_SIZE)
    for opset in (16, 19, "17", True):
        with pytest.raises(ValueError, match="opset"):
            export.onnx(model, path, input_size=IMAGE_SIZE, opset=opset)
    with pytest.raises(ValueError, match="`input_size` must be"):
        export.onnx(model, path, input_size=(60,))
    with pytest.raises(ValueError, match="pass `input_size="):
        export.onnx(model, path)  # test_scale None: no default size
    assert not (tmp_path / "m.onnx").exists()

    quantized = ["export", "light_r18", "--format", "onnx", "--output", path,
                 "--quantization", "float16"]  # fmt: skip
    assert cli.main(quantized) == 2
    assert "tflite only" in capsys.readouterr().err
    opset = ["export", "light_r18", "--format", "tflite", "--output", "m.tflite",
             "--opset", "18"]  # fmt: skip
    assert cli.main(opset) == 2
    assert "--opset applies to --format onnx" in capsys.readouterr().err
    bad_opset = ["export", "light_r18", "--format", "onnx", "--output", path,
                 "--opset", "12"]  # fmt: skip
    assert cli.main(bad_opset) == 2
    assert "--opset must be one of (17, 18)" in capsys.readouterr().err


def test_the_benchmarks_onnx_predictor_returns_what_predict_returns(model, exported):
    """`benchmarks/vs_mmdet.py`'s ONNX Runtime column runs the file behind
    `LiteRTPredictor`'s letterbox and paste; it broke once, unseen, when a
    `LiteRTPredictor` attribute was renamed."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        from vs_mmdet import onnx_runtime_predictor
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))
    image = sample_image()
    got = onnx_runtime_predictor(exported, 2).predict(image)
    expected = model.predict(image, verbose=0)
    n = int(expected["num_detections"][0])
    assert 0 < n < SLOTS and int(got["num_detections"][0]) == n
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-3)
    assert got["masks"].shape == expected["masks"].shape == (1, SLOTS, *IMAGE_SIZE)
    inter = (got["masks"][0, :n] & expected["masks"][0, :n]).sum(axis=(1, 2))
    union = (got["masks"][0, :n] | expected["masks"][0, :n]).sum(axis=(1, 2))
    assert (inter >= 0.99 * union).all(), inter / np.maximum(union, 1)
    assert not got["masks"][0, n:].any()
