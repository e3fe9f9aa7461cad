"""`TorchSGD` in `fit` (jit-compiled, saved and reloaded, on TensorFlow and
JAX) and under tf.distribute, against `torch_sgd_reference`
(sgd_reference.py).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from sgd_reference import (
    assert_same_weights,
    displacement_error,
    schedule_rates,
    torch_sgd_reference,
)

import keras_solov2
from keras_solov2.optimizers import TorchSGD


def check_fit_and_reload(directory):
    """`fit` with `jit_compile=True`, save/load, more `fit`, against the reference.

    A linear model with the mean squared error, so that the reference can
    compute its gradients in numpy. Runs on whatever backend Keras uses.
    """
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (32, 4)).astype("float32")
    y = (x @ rng.normal(0, 3, (4, 3)) + 5.0).astype("float32")
    kernel = rng.normal(0, 0.5, (4, 3)).astype("float32")
    bias = np.zeros(3, "float32")
    batch, epochs_before, epochs_after = 8, 3, 2
    steps = len(x) // batch * (epochs_before + epochs_after)
    schedule_args = dict(warmup_steps=6, warmup_ratio=0.1, milestones=(9, 15))

    def gradients(step, w):
        start = step % (len(x) // batch) * batch
        xb, yb = x[start : start + batch], y[start : start + batch]
        residual = 2.0 * (xb @ w[0] + w[1] - yb) / yb.size
        return [xb.T @ residual, residual.sum(0)]

    rates = schedule_rates(steps, 0.05, **schedule_args)
    ref, _, clipped = torch_sgd_reference(
        [kernel, bias], gradients, rates, 0.9, 1e-2, max_norm=4.0
    )
    assert any(clipped) and not all(clipped), clipped

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.set_weights([kernel, bias])
    schedule = keras_solov2.WarmupStepSchedule(base_learning_rate=0.05, **schedule_args)
    optimizer = TorchSGD(schedule, 0.9, 1e-2, max_grad_norm=4.0)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    model.fit(x, y, batch_size=batch, epochs=epochs_before, shuffle=False, verbose=0)
    buffers = [keras.ops.convert_to_numpy(m) for m in optimizer.momentums]
    assert all(np.abs(b).max() > 0 for b in buffers)

    path = os.path.join(directory, "linear.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is TorchSGD
    assert loaded.optimizer.get_config() == optimizer.get_config()
    assert (
        int(keras.ops.convert_to_numpy(loaded.optimizer.iterations))
        == len(x) // batch * epochs_before
    )
    for ours, saved in zip(loaded.optimizer.momentums, buffers, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), saved)
    # The rest of the trajectory, including the decay at step 15, needs the
    # restored step count and buffers.
    loaded.fit(x, y, batch_size=batch, epochs=epochs_after, shuffle=False, verbose=0)
    for ours, expected in zip(loaded.get_weights(), ref, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    return "FIT-OK"


def test_fit_with_jit_compile_and_reload(tmp_path):
    assert check_fit_and_reload(str(tmp_path)) == "FIT-OK"


def run_script(script, *args, **env):
    """Runs `script` in a fresh Python (the backend and devices are global)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        cwd=root,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.jax
def test_fit_and_reload_on_jax(tmp_path):
    pytest.importorskip("jax", reason="jax is not installed (pip install '.[jax]')")
    out = run_script(
        f"""
        import os, sys
        sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
        import keras
        assert keras.backend.backend() == "jax"
        from test_optimizers_fit import check_fit_and_reload
        print(check_fit_and_reload({str(tmp_path)!r}))
        """,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
    )
    assert "FIT-OK" in out


MIRRORED = """
    import sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from keras_solov2.optimizers import TorchSGD

    per_replica = np.load(sys.argv[1])  # (steps, replicas, size)
    weights = np.load(sys.argv[2])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        variable = keras.Variable(weights)
        optimizer = TorchSGD(0.01, momentum=0.9, weight_decay=1e-4, max_grad_norm=35.0)
        optimizer.build([variable])

    @tf.function
    def train_step(grads):
        strategy.run(lambda g: optimizer.apply([g], [variable]), args=(grads,))

    for step in per_replica:
        grads = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(step[context.replica_id_in_sync_group])
        )
        train_step(grads)
    np.save(sys.argv[3], variable.numpy())
    print("MIRRORED-OK")
"""


@pytest.mark.slow
def test_mirrored_strategy_clips_the_summed_gradients(tmp_path):
    """Two replicas whose gradients are large but nearly cancel out.

    Clipping each replica's gradient (as Keras' `global_clipnorm` does inside
    `tf.distribute`) would give other weights than clipping their sum.
    """
    rng = np.random.default_rng(6)
    steps, size = 6, 64
    weights = rng.normal(0, 1, size).astype("float32")
    total = [rng.normal(0, 1, size) * s for s in (2.0, 8.0, 2.0, 8.0, 2.0, 8.0)]
    noise = [rng.normal(0, 10, size) for _ in range(steps)]
    per_replica = np.stack(
        [np.stack([t / 2 + n, t / 2 - n]) for t, n in zip(total, noise, strict=True)]
    ).astype("float32")
    np.save(tmp_path / "grads.npy", per_replica)
    np.save(tmp_path / "weights.npy", weights)
    out = run_script(
        MIRRORED,
        tmp_path / "grads.npy",
        tmp_path / "weights.npy",
        tmp_path / "out.npy",
    )
    assert "MIRRORED-OK" in out
    summed = [[g[0].astype(np.float64) + g[1]] for g in per_replica]
    ref, _, clipped = torch_sgd_reference(
        [weights], summed, [0.01] * steps, 0.9, 1e-4, 35
    )
    assert any(clipped) and not all(clipped), clipped
    ours = np.load(tmp_path / "out.npy")
    assert_same_weights([ours], ref, [weights])

    def clip(g):
        return g * min(1.0, 35.0 / (np.linalg.norm(g) + 1e-6))

    clipped_each = [[clip(g[0].astype(np.float64)) + clip(g[1])] for g in per_replica]
    wrong, _, _ = torch_sgd_reference(
        [weights], clipped_each, [0.01] * steps, 0.9, 1e-4
    )
    assert displacement_error(wrong, ref, [weights]) > 0.1
