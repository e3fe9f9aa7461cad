"""`SOLOv2.predict` and its engines (`keras_solov2.models.solov2.solov2_predict`):
odd sizes, lists of sizes, retracing, and TensorFlow's XLA split."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_model

from keras_solov2.models.solov2 import solov2_predict


def test_the_engine_follows_the_backend_and_jit_compile():
    model = tiny_model()
    assert solov2_predict.predict_engine(model) == "tensorflow"
    model.compile(jit_compile=True)
    assert solov2_predict.predict_engine(model) == "tensorflow_xla"
    model.compile(jit_compile=True, run_eagerly=True)
    assert solov2_predict.predict_engine(model) == "tensorflow"
    model.compile(jit_compile=False)
    assert solov2_predict.predict_engine(model) == "tensorflow"


# Random weights score every cell about 0.01 (the classifier prior): without
# the score and filter thresholds every slot holds a detection.
EVERYTHING = {"score_threshold": 0.0, "filter_threshold": 0.0}


def assert_detections_consistent(out, i, image_shape):
    """Image `i`'s detections: real masks, sorted scores, boxes of the masks."""
    n = int(out["num_detections"][i])
    assert n > 0, "the decoder returned no detection"
    masks, boxes = out["masks"][i], out["boxes"][i]
    assert np.all(out["labels"][i, n:] == -1) and np.all(out["scores"][i, n:] == 0)
    assert np.all(out["labels"][i, :n] >= 0) and np.all(out["scores"][i, :n] > 0)
    assert np.all(np.diff(out["scores"][i, :n]) <= 0)
    assert not masks[n:].any()
    for k in range(n):
        ys, xs = np.nonzero(masks[k])
        if len(ys):  # tight [x1, y1, x2, y2] pixel-edge box of the mask
            want = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_array_equal(boxes[k], want)
    assert masks.shape[1:] == image_shape[:2]
    assert masks[:n].any(axis=(1, 2)).sum() > 0


@pytest.mark.parametrize("shape", [(1, 37, 53, 3), (2, 70, 90, 3)])
def test_predict_on_odd_sizes(shape):
    model = tiny_model(test_scale=(96, 64), max_detections=7, **EVERYTHING)
    images = np.random.default_rng(0).integers(0, 255, shape).astype("uint8")
    out = model.predict(images, verbose=0)
    b, h, w, _ = shape
    assert out["masks"].shape == (b, 7, h, w) and out["masks"].dtype == bool
    assert out["labels"].shape == (b, 7) and out["scores"].shape == (b, 7)
    assert out["boxes"].shape == (b, 7, 4) and out["num_detections"].shape == (b,)
    for i in range(b):
        assert_detections_consistent(out, i, shape[1:])


def test_predict_list_of_sizes():
    model = tiny_model(test_scale=(96, 64), max_detections=5, **EVERYTHING)
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 255, s).astype("uint8") for s in ((40, 60, 3), (64, 32, 3))
    ]
    results = model.predict(images)
    assert len(results) == 2
    for image, result in zip(images, results, strict=True):
        n = int(result["num_detections"])
        assert n > 0
        assert result["masks"].shape == (n,) + image.shape[:2]
        assert result["labels"].shape == (n,)
        # The same image alone, as a batch of one, gives the same detections.
        alone = model.predict(image[None], verbose=0)
        assert int(alone["num_detections"][0]) == n
        for key in ("masks", "labels", "scores", "boxes"):
            np.testing.assert_array_equal(result[key], alone[key][0][:n])


def test_inference_does_not_depend_on_what_came_before():
    model = tiny_model(test_scale=(96, 64), max_detections=6, **EVERYTHING)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (1, 45, 61, 3)).astype("uint8")
    first = model.predict(image, verbose=0)
    sizes = [(32, 32), (90, 40), (17, 130), (64, 64), (45, 62), (200, 150),
             (33, 47), (45, 61), (120, 80), (50, 50), (61, 45), (8, 300)]  # fmt: skip
    for h, w in sizes:
        model.predict(rng.integers(0, 255, (1, h, w, 3)).astype("uint8"), verbose=0)
    model.predict([rng.integers(0, 255, (20, 30, 3)).astype("uint8"), image[0]])
    again = model.predict(image, verbose=0)
    assert int(first["num_detections"][0]) > 0
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])


def test_mask_probabilities_do_not_depend_on_earlier_image_sizes():
    # TensorFlow's predict function relaxes to (1, None, None, 3) after a
    # second size; the resize must stay OpenCV-exact there (a float resize,
    # one grey level off, moves these probabilities).
    # A size met first is traced at its static shape; a size met after
    # another one runs in the relaxed trace.
    model = tiny_model(test_scale=(96, 64), max_detections=6, **EVERYTHING)
    model.mask_resolution = "features"
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (1, 45, 61, 3)).astype("uint8")
    first = model.predict(image, verbose=0)
    model.make_predict_function(force=True)
    model.predict(rng.integers(0, 255, (1, 32, 32, 3)).astype("uint8"), verbose=0)
    again = model.predict(image, verbose=0)
    for key in first:
        np.testing.assert_allclose(again[key], first[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("test_scale", [None, (96, 64)])
def test_predict_after_a_size_that_shares_one_side(test_scale):
    # The second size retraces predict with the other side relaxed to None:
    # the sizes then mixed a Python int and a tensor, which the decoder refused.
    keras.utils.set_random_seed(5)
    model = tiny_model(test_scale=test_scale)
    fresh = tiny_model(test_scale=test_scale)
    fresh.set_weights(model.get_weights())
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (1, 60, 90, 3)).astype("uint8")
    second = rng.integers(0, 256, (1, 60, 600, 3)).astype("uint8")
    model.predict(first, verbose=0)
    got = model.predict(second, verbose=0)
    want = fresh.predict(second, verbose=0)
    assert got["masks"].shape == (1, model.max_detections, 60, 600)
    for key in ("labels", "scores", "num_detections", "masks"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_xla_predict_compiles_once_per_image_size():
    # Under `jit_compile=True` TensorFlow bakes every value that XLA needs as
    # a constant into the program, and compiles again for each new value. A
    # slice whose start came from the detection count once made the count,
    # and so the image, such a constant: every new image recompiled (tens
    # of seconds), with the network constant-folded on it. The image must
    # stay a parameter of the program, so that it depends on the size only.
    model = tiny_model(test_scale=(96, 64), max_detections=6)
    step = tf.function(model.predict_step, jit_compile=True)
    image = tf.constant(np.zeros((1, 45, 61, 3), "uint8"))
    hlo = step.experimental_get_compiler_ir(image)(stage="hlo")
    entry = hlo[hlo.index("\nENTRY") :]
    parameters = re.findall(r"= (\S+?)\{?[\d,]*\}? parameter\(\d+\)", entry)
    assert "u8[1,45,61,3]" in parameters, parameters


def test_xla_predict_compiles_the_network_and_matches_graph_predict(tmp_path):
    # With jit_compile=True on TensorFlow, XLA compiles the network and the
    # decoding up to the feature-resolution masks, and the paste stays in
    # the graph: the same detections as without XLA, and a SavedModel
    # exported afterwards holds no XLA-only call.
    from detection_match import match_detections

    model = tiny_model(test_scale=(96, 64), max_detections=6, **EVERYTHING)
    rng = np.random.default_rng(7)
    images = [
        rng.integers(0, 255, (1, *s, 3)).astype("uint8") for s in ((45, 61), (70, 50))
    ]
    model.compile(jit_compile=False)
    graph = [model.predict(image, verbose=0) for image in images]
    model.compile(jit_compile=True)
    xla = [model.predict(image, verbose=0) for image in images]
    for reference, candidate in zip(graph, xla, strict=True):
        assert int(reference["num_detections"][0]) > 0
        np.testing.assert_array_equal(candidate["labels"], reference["labels"])
        np.testing.assert_allclose(candidate["scores"], reference["scores"], atol=1e-3)
        assert min(match_detections(reference, candidate)["ious"]) >= 0.99
    graph_function = model.predict_function
    assert solov2_predict.predict_engine(model) == "tensorflow_xla"
    model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    serving = loaded.signatures["serving_default"]
    library = serving.graph.as_graph_def().library.function
    assert library  # the functions whose attributes are checked
    xla = [f.signature.name for f in library if f.attr["_XlaMustCompile"].b]
    assert not xla
    assert graph_function is model.predict_function
