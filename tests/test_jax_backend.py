"""The same model code on the JAX backend (a subprocess: the backend is global)."""

import textwrap

import pytest
from conftest import run_on_jax

SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from conftest import rectangle_batch, tiny_model
    keras.utils.set_random_seed(0)
    model = tiny_model(test_scale=(96, 64), score_threshold=0.0, max_detections=5)
    images, targets = rectangle_batch(batch=2, size=64)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
    first = model.train_on_batch(images, targets, return_dict=True)
    for _ in range(15):
        last = model.train_on_batch(images, targets, return_dict=True)
    assert np.isfinite(last["loss"]) and last["loss"] < first["loss"], (first, last)
    out = model.predict(np.zeros((1, 45, 61, 3), "uint8"), verbose=0)
    assert out["masks"].shape == (1, 5, 45, 61), out["masks"].shape
    # SOLOv2.predict's own jitted step (no output copy) equals Keras' path.
    photo = np.random.default_rng(1).integers(0, 255, (2, 50, 70, 3)).astype("uint8")
    got, expected = model.predict(photo, verbose=0), model.predict_on_batch(photo)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert got["num_detections"].max() > 0
    assert not got["masks"].flags.owndata  # a view of the JAX buffer, not a copy
    model.max_detections = 3  # a changed setting rebuilds the step
    assert model.predict(photo, verbose=0)["masks"].shape == (2, 3, 50, 70)
    print("JAX-OK", first["loss"], last["loss"])
    """
)


@pytest.mark.slow
@pytest.mark.jax
def test_train_and_predict_on_jax():
    assert "JAX-OK" in run_on_jax(SCRIPT, timeout=900)


SIZES_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from conftest import tiny_model
    keras.utils.set_random_seed(0)
    model = tiny_model(test_scale=(96, 64), score_threshold=0.0, max_detections=5)
    conv = model.get_layer("conv_cls")  # random scores that pass the thresholds
    kernel, bias = conv.get_weights()
    rng = np.random.default_rng(2)
    conv.set_weights([rng.normal(0, 0.3, kernel.shape).astype("float32"), 0 * bias])
    model.compile(jit_compile=True)
    # Three photo sizes that resize into the same 64 x 96 canvas, and one
    # that does not (a portrait photo).
    sizes = [(50, 70), (51, 70), (49, 69), (70, 50)]
    for size in sizes:
        photo = rng.integers(0, 255, (1, *size, 3)).astype("uint8")
        got, expected = model.predict(photo, verbose=0), model.predict_on_batch(photo)
        assert sorted(got) == sorted(expected), (sorted(got), sorted(expected))
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
        assert got["masks"].shape == (1, 5, *size)
        assert got["num_detections"][0] > 0
    step = model._jax_predict()
    compiled = (step.preprocess._cache_size(), step.network._cache_size())
    assert compiled == (4, 2), compiled
    print("SIZES-OK", compiled)
    """
)


@pytest.mark.jax
def test_jax_predict_compiles_the_network_once_per_canvas():
    assert "SIZES-OK" in run_on_jax(SIZES_SCRIPT, timeout=900)
