"""The same model code on the JAX backend (a subprocess: the backend is global)."""

import textwrap

import pytest
from helpers import run_on_jax

SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from helpers import rectangle_batch, tiny_model
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
    from helpers import tiny_model
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
    from keras_solov2.models.solov2 import solov2_predict
    assert solov2_predict.predict_engine(model) == "jax"
    step = solov2_predict.jax_predict(model)
    compiled = (step.preprocess._cache_size(), step.network._cache_size())
    assert compiled == (4, 2), compiled
    print("SIZES-OK", compiled)
    """
)


@pytest.mark.jax
def test_jax_predict_compiles_the_network_once_per_canvas():
    assert "SIZES-OK" in run_on_jax(SIZES_SCRIPT, timeout=900)


GROUPED_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from helpers import tiny_model
    from coco_mini import with_portrait
    from keras_solov2.data import CocoDataset
    folder = Path(sys.argv[1])
    path, _, _ = with_portrait(folder)
    data = CocoDataset(path, str(folder))
    ds = data.as_tf_dataset(batch_size=1, scales=[(256, 192)], max_instances=20,
                            training=False, aspect_ratio_grouping=True)
    batches = [(i.numpy(), {k: v.numpy() for k, v in t.items()}) for i, t in ds]
    shapes = {images.shape[1:3] for images, _ in batches}
    assert shapes == {(192, 256), (256, 192)}, shapes
    keras.utils.set_random_seed(0)
    kwargs = dict(num_classes=data.num_classes, base_channels=16)
    fitted, stepped = tiny_model(**kwargs), tiny_model(**kwargs)
    initial = fitted.get_weights()
    stepped.set_weights(initial)
    for model in (fitted, stepped):
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    fitted.fit(ds, epochs=1, verbose=0)  # tf.data batches with None sides
    for images, targets in batches:  # the same batches, one by one
        stepped.train_on_batch(images, targets)
    moved = 0.0
    for a, b, w in zip(fitted.get_weights(), stepped.get_weights(), initial):
        np.testing.assert_allclose(a, b, atol=1e-5)
        moved = max(moved, float(np.abs(a - w).max()))
    assert moved > 1e-4, moved
    print("GROUPED-OK", moved)
    """
)


@pytest.mark.jax
def test_jax_fit_on_aspect_ratio_grouped_batches(tmp_path):
    assert "GROUPED-OK" in run_on_jax(GROUPED_SCRIPT, str(tmp_path), timeout=900)
