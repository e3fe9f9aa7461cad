"""The same converted weights give the same predictions on JAX as on TensorFlow.

A checkpoint in mmdetection's layout is converted by our converter (no
torch), run on TensorFlow in this process (the test suite's backend) and
saved with `save_to_preset`; a JAX subprocess (`run_on_jax`: the backend is
global) loads that preset and runs the same images through the same code
(`backend_outputs`). Compared, image by image:

- the preprocessed network input (resize + padding): identical;
- the dense outputs (`category_logits`, `kernels`, `mask_features`) of both
  backends on the same input: max |diff| <= 1e-4 of each output's scale;
- the decoder on the same dense outputs (TensorFlow's): the same detections;
- `model.predict` end to end: the same detections (the same number and
  labels; one-to-one matched masks and scores), within the tolerances
  measured and explained at `PREDICT_SCORE_TOLERANCE`;
- and TensorFlow's `predict` does not depend on the image sizes predicted
  before (`test_tensorflow_predict_after_another_image_size`; it did until
  the image converter resized exactly at run-time sizes too).

`test_random_mmdet_checkpoint` needs nothing outside the repository: the
checkpoint holds random weights under mmdetection's keys, written in
PyTorch's zip format by `torch_zip`. `test_real_mmdet_checkpoint` takes the
checkpoint that the real mmdetection 3.3.0 saved in the reference harness
(../shared/reference/mmdet, see test_mmdet_parity.py) and is skipped
without the harness.
"""

import os
import textwrap
import time

import numpy as np
import pytest
from detection_match import match_detections
from helpers import FIXTURES, mmdet_state_dict, run_on_jax
from test_mmdet_parity import dumps, load  # noqa: F401  (dumps is a fixture)
from torch_zip import write_torch_checkpoint

import keras_solov2
from keras_solov2.convert import from_mmdet
from keras_solov2.io import load_image
from keras_solov2.models.solov2.solov2_presets import COCO_CLASS_NAMES

PHOTOS = os.path.join(FIXTURES, "coco_mini", "val2017")
DENSE_KEYS = ("category_logits", "kernels", "mask_features")
DETECTION_KEYS = ("labels", "scores", "num_detections", "candidates_overflow")
# light_r18 at a smaller test scale than its (768, 448): the same network on
# about a third of the pixels, so that both backends run in seconds.
TEST_SCALE = (384, 224)

# max |JAX - TF| / max |TF|, per dense output. Measured: at most 6.0e-6
# (random checkpoint) and 7.7e-6 (mmdetection's), the float32 noise of
# another convolution implementation (TensorFlow's own graph and eager
# modes differ by as much: 1.5e-5 absolute on category_logits).
DENSE_TOLERANCE = 1e-4
# The decoder on the same dense outputs: scores differ by at most 1.2e-7
# and at most 1 mask pixel per image flips (in 5-31 M; the bilinear paste to
# the original size rounds differently): worst IoU 0.99996.
DECODER_SCORE_TOLERANCE = 1e-6
DECODER_MIN_IOU = 0.999
# End to end, the dense outputs' ~1e-5 noise moves candidate-mask pixels
# near the 0.5 threshold, hence the maskness and the Matrix NMS decay of the
# ~1000 candidates: scores differ by up to 2.3e-4 (synthetic image, random
# checkpoint; 1.1e-4 portrait, 7.3e-5 landscape, 6.9e-5 mmdetection's
# checkpoint). That is the decoder's sensitivity to float noise, not a
# backend difference: TensorFlow's `predict` (a graph) differs from
# TensorFlow's eager `model(x)` + decoder by the same 7.4e-5 / 1.1e-4 /
# 2.3e-4, while JAX's `predict` is within 2.3e-6 / 9.8e-5 / 1.5e-6 of
# TensorFlow eager. Mask pixels whose probability is within ~1e-5 of 0.5
# flip: at most 39 per image, worst matched IoU 0.99946. The tolerance is
# test_mmdet_parity's.
PREDICT_SCORE_TOLERANCE = 1e-3
PREDICT_MIN_IOU = 0.99
AFTER_SIZE_SCORE_TOLERANCE = 2.5e-4

JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    sys.path.insert(0, os.path.join(os.getcwd(), "tests", "models", "solov2"))
    import keras, numpy as np
    import keras_solov2
    from test_jax_tf_predictions import backend_outputs

    assert keras.backend.backend() == "jax", keras.backend.backend()
    preset, reference_path, out_path = sys.argv[1:]
    reference = dict(np.load(reference_path))
    names = str(reference["names"]).split(",")
    images = {name: reference[f"{name}__image"] for name in names}
    model = keras_solov2.SOLOv2.from_preset(preset)
    out = backend_outputs(model, images, reference)
    out["test_scale"] = np.asarray(model.test_scale or (0, 0))
    out["class_names"] = np.asarray(",".join(model.class_names or ()))
    np.savez(out_path, **out)
    print("JAX-OK", keras.backend.backend())
    """
)


# ---------------------------------------------------------------- helpers
def random_mmdet_checkpoint(path, seed=0):
    """Writes a light_r18 checkpoint of random weights in mmdetection's layout.

    Convolutions keep Keras' initialisation (He normal: activations stay of
    order one through the ResNet); every BatchNorm statistic and affine, GN
    affine and bias is drawn at random, so that the conversion of each kind
    of tensor matters. The classifier's weights are scaled x3 and its biases
    drawn in [-7, -4] (instead of the prior's -4.6 for all): scores then
    vary over the image and about a thousand cells pass the 0.1 score
    threshold, so the decoder has real work (Matrix NMS over many
    overlapping masks of several classes, 100 detections kept).
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_solov2.SOLOv2.from_preset("light_r18", load_weights=False)
    state = mmdet_state_dict(model)
    rng = np.random.default_rng(seed)
    for key, value in state.items():
        shape = np.shape(value)
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) == 1 and key.endswith(".weight"):  # BN / GN scale
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1 and key.endswith(".bias"):
            value = value + rng.normal(0.0, 0.1, shape)
        state[key] = np.asarray(value, "float32")
    state["mask_head.conv_cls.weight"] *= 3.0
    bias = "mask_head.conv_cls.bias"
    state[bias] = rng.uniform(-7.0, -4.0, state[bias].shape).astype("float32")
    meta = {"dataset_meta": {"classes": list(COCO_CLASS_NAMES)}}
    write_torch_checkpoint(path, {"meta": meta, "state_dict": state})


def sample_images():
    """uint8 RGB images of different sizes, landscape and portrait."""
    landscape = load_image(os.path.join(PHOTOS, "000000434204.jpg"))  # 333x500
    portrait = np.ascontiguousarray(  # 640x408: a photo turned by 90 degrees
        np.rot90(load_image(os.path.join(PHOTOS, "000000205401.jpg")))
    )
    rng = np.random.default_rng(1)
    synthetic = rng.normal(110.0, 20.0, (283, 187, 3))  # portrait, odd sizes
    for (y1, x1, y2, x2), color in (
        ((20, 15, 150, 120), (230, 40, 40)),
        ((120, 60, 270, 180), (40, 200, 60)),
        ((200, 5, 250, 70), (30, 60, 220)),
    ):
        synthetic[y1:y2, x1:x2] = color + rng.normal(0.0, 8.0, (y2 - y1, x2 - x1, 3))
    synthetic = np.clip(np.round(synthetic), 0, 255).astype("uint8")
    return {"landscape": landscape, "portrait": portrait, "synthetic": synthetic}


def backend_outputs(model, images, reference=None):
    """What is compared, on the current backend, as flat `{name__key: array}`.

    Per image: `input` (the preprocessed network input), the dense outputs,
    `dec_*` (the decoder on the dense outputs) and `det_*` (`model.predict`).
    With `reference` (TensorFlow's outputs), the network runs on
    TensorFlow's input and the decoder on TensorFlow's dense outputs, so
    that each stage is compared on the same input.
    """
    out = {}
    for name, image in images.items():
        inputs, resized_size, original_size = model.preprocess(image[None])
        out[f"{name}__input"] = np.asarray(inputs)
        if reference is not None:
            inputs = reference[f"{name}__input"]
        dense = {k: np.asarray(v) for k, v in model(inputs).items()}
        out.update({f"{name}__{k}": v for k, v in dense.items()})
        if reference is not None:
            dense = {k: reference[f"{name}__{k}"] for k in DENSE_KEYS}
        decoded = model.decoder(
            *(dense[k] for k in DENSE_KEYS),
            resized_size=resized_size,
            original_size=original_size,
        )
        out.update({f"{name}__dec_{k}": np.asarray(v) for k, v in decoded.items()})
        # A fresh predict function per image: on TensorFlow, Keras traces
        # `predict` with `reduce_retracing=True`, so a second image size runs
        # a `(1, None, None, 3)` trace that resizes differently (see
        # `test_tensorflow_predict_after_another_image_size`). JAX always
        # traces static shapes.
        model.make_predict_function(force=True)
        predicted = model.predict(image[None], verbose=0)
        out.update({f"{name}__det_{k}": np.asarray(v) for k, v in predicted.items()})
    return out


def assert_same_dense(name, tf, jx):
    np.testing.assert_array_equal(
        jx[f"{name}__input"], tf[f"{name}__input"], err_msg=f"{name}: preprocessing"
    )
    errors = {}
    for key in DENSE_KEYS:
        ours, ref = jx[f"{name}__{key}"], tf[f"{name}__{key}"]
        assert ours.shape == ref.shape, (name, key, ours.shape, ref.shape)
        errors[key] = float(np.abs(ours - ref).max() / np.abs(ref).max())
    summary = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
    print(f"{name}: dense max |diff| / scale: {summary}")
    worst = max(errors, key=errors.get)
    assert errors[worst] <= DENSE_TOLERANCE, f"{name}: {summary}"
    return max(errors.values())


def assert_same_detections(what, tf, jx, score_tolerance, min_iou):
    """`tf`, `jx`: one image's detections (batch of 1).

    The same number and the same labels; each TensorFlow detection, best
    score first, is matched to the unused JAX detection of its label with
    the highest mask IoU (`detection_match`), which must be within the
    tolerances. Slots are matched, not compared in order: two detections
    whose scores are closer than the score noise may swap places (measured:
    portrait, slots 87-88, scores 0.07429 / 0.07425 on TensorFlow, 0.07423 /
    0.07425 on JAX). Labels in slot order are reported.
    """
    n, n_jax = int(tf["num_detections"][0]), int(jx["num_detections"][0])
    swapped = np.flatnonzero(tf["labels"][0] != jx["labels"][0])
    match = match_detections(tf, jx)
    ious, score_diffs = match["ious"], match["score_diffs"]
    flipped = int((tf["masks"][0, :n] != jx["masks"][0, :n]).sum())
    print(
        f"{what}: {n} / {n_jax} detections (TF / JAX), candidates overflow "
        f"{int(tf['candidates_overflow'][0])} / {int(jx['candidates_overflow'][0])}, "
        f"labels differing in slot order at {swapped.tolist()}, max score diff "
        f"{score_diffs.max(initial=0.0):.1e}, worst IoU "
        f"{ious.min(initial=1.0):.5f}, mask pixels differing slot by slot "
        f"{flipped} of {tf['masks'][0, :n].size}"
    )
    assert n > 0, f"{what}: no detections on TensorFlow, nothing is compared"
    assert n_jax == n, f"{what}: {n_jax} detections on JAX, {n} on TensorFlow"
    assert sorted(jx["labels"][0].tolist()) == sorted(tf["labels"][0].tolist())
    np.testing.assert_array_equal(
        jx["candidates_overflow"], tf["candidates_overflow"], err_msg=what
    )
    worst = int(np.argmax(score_diffs))
    assert score_diffs[worst] <= score_tolerance, (
        f"{what}: score diff {score_diffs[worst]:.2e} (detection {worst})"
    )
    assert ious.min() >= min_iou, f"{what}: matched mask IoUs {np.round(ious, 5)}"
    return float(score_diffs.max()), float(ious.min())


def assert_backends_agree(model, images, tmp_path):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference side runs on TensorFlow (KERAS_BACKEND unset)")
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    start = time.perf_counter()
    tf = backend_outputs(model, images)
    tf.update({f"{name}__image": image for name, image in images.items()})
    tf["names"] = np.asarray(",".join(images))
    reference = str(tmp_path / "tensorflow.npz")
    np.savez(reference, **tf)
    print(f"TensorFlow side: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    out = str(tmp_path / "jax.npz")
    stdout = run_on_jax(JAX_SCRIPT, preset, reference, out, timeout=900)
    assert "JAX-OK jax" in stdout, stdout[-2000:]
    print(f"JAX subprocess: {time.perf_counter() - start:.1f} s")
    jx = dict(np.load(out))
    assert tuple(jx["test_scale"]) == tuple(model.test_scale or (0, 0))
    assert str(jx["class_names"]) == ",".join(model.class_names or ())
    for name in images:
        assert_same_dense(name, tf, jx)
        for kind, score_tolerance, min_iou in (
            ("dec", DECODER_SCORE_TOLERANCE, DECODER_MIN_IOU),
            ("det", PREDICT_SCORE_TOLERANCE, PREDICT_MIN_IOU),
        ):
            keys = (*DETECTION_KEYS, "masks")
            assert_same_detections(
                f"{name} {'decoder' if kind == 'dec' else 'predict'}",
                {k: tf[f"{name}__{kind}_{k}"] for k in keys},
                {k: jx[f"{name}__{kind}_{k}"] for k in keys},
                score_tolerance,
                min_iou,
            )


# ------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The random light_r18 checkpoint, converted, at `TEST_SCALE`."""
    checkpoint = str(tmp_path_factory.mktemp("ckpt") / "solov2_light_r18_random.pth")
    random_mmdet_checkpoint(checkpoint)
    model = from_mmdet(checkpoint, architecture="light_r18", progress=False)
    assert model.class_names == list(COCO_CLASS_NAMES)
    model.test_scale = TEST_SCALE
    return model


@pytest.mark.slow
@pytest.mark.jax
def test_random_mmdet_checkpoint(converted, tmp_path):
    pytest.importorskip("jax", reason="jax is not installed (pip install '.[jax]')")
    assert_backends_agree(converted, sample_images(), tmp_path)


# Keras traces TensorFlow's predict with reduce_retracing=True: after a first
# image size the trace is (1, None, None, 3). The image converter then
# computes its OpenCV-exact resize in the graph; before it did, it fell back
# to a float bilinear resize there, and detections depended on the sizes
# predicted before (scores moved by up to 8e-3, labels reordered).
@pytest.mark.slow
def test_tensorflow_predict_after_another_image_size(converted):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("a TensorFlow behaviour")
    images = sample_images()
    converted.make_predict_function(force=True)
    fresh = converted.predict(images["portrait"][None], verbose=0)
    converted.make_predict_function(force=True)
    converted.predict(images["landscape"][None], verbose=0)
    after = converted.predict(images["portrait"][None], verbose=0)
    # The resize is now the same to the bit (tests/layers/test_layers.py); the two
    # traces still run other kernels (static against run-time shapes), whose
    # float noise can swap near-tied detections (slots 19-20 and 76-77
    # here): matched, scores agree within 6.9e-5 (measured; worst IoU
    # 0.99979) and the overflow count is the same. The float resize moved
    # scores by 2e-3 to 8e-3 and changed the overflow (57 to 55).
    assert_same_detections(
        "after another size", fresh, after, AFTER_SIZE_SCORE_TOLERANCE, 0.999
    )


@pytest.mark.parity
@pytest.mark.jax
def test_real_mmdet_checkpoint(dumps, tmp_path):  # noqa: F811
    pytest.importorskip("jax", reason="jax is not installed (pip install '.[jax]')")
    for path in ("input.npy", os.path.join("light_r18", "ckpt.pth")):
        assert os.path.exists(os.path.join(dumps, path)), (
            f"{os.path.join(dumps, path)} is missing; delete "
            f"{os.path.join(dumps, 'summary.json')} to have the harness run again"
        )
    model = load("light_r18")  # mmdetection's checkpoint, test scale (768, 448)
    bgr = np.load(os.path.join(dumps, "input.npy"))  # the harness's 480x640 photo
    assert_backends_agree(
        model, {"harness": np.ascontiguousarray(bgr[..., ::-1])}, tmp_path
    )
