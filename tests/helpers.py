"""What the tests share: tiny models, the export tests' image, paths.

Tests import it by name (`from helpers import tiny_model`): pytest puts
`tests/` on the path (`pythonpath` in pyproject.toml). Fixtures stay in
conftest.py.
"""

import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_solov2  # noqa: E402

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"

TINY_GRIDS = (8, 6, 4, 3, 2)
TINY_RANGES = ((1, 32), (16, 64), (32, 128), (64, 256), (128, 512))


def tiny_model(num_classes=3, test_scale=None, **kwargs):
    """A SOLOv2 small enough to train in seconds (about 0.45 M parameters)."""
    backbone_kwargs = dict(
        depth=18,
        stage_blocks=(1, 1, 1, 1),
        base_channels=8,
        fpn_channels=32,
        num_grids=TINY_GRIDS,
        head_channels=32,
        stacked_convs=1,
        kernel_channels=16,
        mask_feature_channels=16,
        num_groups=8,
        frozen_stages=-1,
        norm_eval=False,
    )
    for key in list(kwargs):
        if key in backbone_kwargs:
            backbone_kwargs[key] = kwargs.pop(key)
    backbone = keras_solov2.SOLOv2Backbone(**backbone_kwargs)
    kwargs.setdefault("scale_ranges", TINY_RANGES)
    return keras_solov2.SOLOv2(
        backbone, num_classes=num_classes, test_scale=test_scale, **kwargs
    )


# The export tests' model and image (test_export*.py, test_onnx.py).
IMAGE_SIZE = (60, 90)  # not a multiple of 32: the graph pads to 64 x 96


def detecting_model():
    """A tiny SOLOv2 whose random category branch scores many cells > 0.1.

    Seeded: the same model whichever tests ran before in the process."""
    keras.utils.set_random_seed(2)
    model = tiny_model()
    conv = model.get_layer("conv_cls")
    kernel, bias = conv.get_weights()
    rng = np.random.default_rng(1)
    conv.set_weights([rng.normal(0, 0.3, kernel.shape).astype("float32"), 0 * bias])
    return model


def sample_image():
    return (
        np.random.default_rng(0).integers(0, 256, (1, *IMAGE_SIZE, 3)).astype("uint8")
    )


def keras_features(model, image):
    """`model.predict` with feature-resolution masks (what the file returns)."""
    resolution = model.mask_resolution
    model.mask_resolution = "features"
    try:
        return model.predict(image, verbose=0)
    finally:
        model.mask_resolution = resolution


def rectangle_batch(batch=2, size=64, max_instances=4):
    """Raw 0..255 images with filled rectangles and matching targets (numpy)."""
    rng = np.random.default_rng(0)
    images = rng.normal(110.0, 15.0, (batch, size, size, 3))
    masks = np.zeros((batch, max_instances, size, size), np.uint8)
    labels = np.full((batch, max_instances), -1, np.int32)
    boxes = np.zeros((batch, max_instances, 4), np.float32)
    for b in range(batch):
        for m in range(2):
            x1, y1 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 6, size // 2, 2)
            x2, y2 = min(x1 + w, size), min(y1 + h, size)
            masks[b, m, y1:y2, x1:x2] = 1
            labels[b, m] = (b + m) % 3
            boxes[b, m] = (x1, y1, x2, y2)
            images[b, y1:y2, x1:x2, labels[b, m]] += 120.0
    images = np.clip(np.round(images), 0, 255).astype("float32")
    return images, {"masks": masks, "labels": labels, "boxes": boxes}


def run_on_jax(script, *args, timeout=600):
    """Runs `script` with `python -c` on the JAX backend (CPU) from the project
    root; asserts it exits 0 and returns its stdout. Skips without jax."""
    pytest.importorskip("jax", reason="jax is not installed (pip install '.[jax]')")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def run_interpreter(path, image):
    """A `.tflite`'s `serving_default` outputs in LiteRT's interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=2)
    return interpreter.get_signature_runner("serving_default")(image=image)


def require(available, message):
    """Skips without `available`; in CI (CI=true) fails instead."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def mmdet_state_dict(model):
    """The model's weights under mmdet names and PyTorch layouts."""
    from keras_solov2.convert.mmdet_keys import target_variables

    state = {}
    for key, (variable, transform) in target_variables(model).items():
        value = np.asarray(variable)
        if transform is not None:  # (kh, kw, in, out) -> (out, in, kh, kw)
            value = np.transpose(value, (3, 2, 0, 1))
        state[key] = value
    for key in list(state):
        if key.endswith("running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = np.array(7)
    return state
