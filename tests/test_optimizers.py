"""The SOLOv2 recipe, and `TorchSGD` against PyTorch's update rule.

`torch_sgd_reference` below is an independent float64 implementation of what
mmdetection does in each step: `torch.nn.utils.clip_grad_norm_` on the
parameters that have a gradient (mmengine's `OptimWrapper`), then
`torch.optim.SGD.step()` (dampening 0, maximize False). The expected values of
these tests come from it, never from the code under test; the comparison with
real torch is in `test_optimizers_torch.py`.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_solov2
from keras_solov2.optimizers import TorchSGD

SHAPES = [(8, 16), (16,), (3, 3, 4, 8)]


def torch_sgd_reference(
    weights,
    grads,
    learning_rates,
    momentum=0.0,
    weight_decay=0.0,
    max_norm=None,
    nesterov=False,
    decay_mask=None,
    dtype=np.float64,
):
    """clip_grad_norm_ + torch.optim.SGD, step by step, in float64.

    `grads` is a list (one entry per step) of lists of arrays, `None` where a
    variable has no gradient, or a function `(step, weights) -> list`.
    `dtype=np.float32` rounds as torch does on float32 parameters.
    Returns the weights, the buffers and, per step, whether clipping scaled.
    """
    w = [np.array(x, dtype) for x in weights]
    buffers = [None] * len(w)
    decay_mask = decay_mask or [True] * len(w)
    clipped = []
    for step, lr in enumerate(learning_rates):
        step_grads = grads(step, w) if callable(grads) else grads[step]
        present = [i for i, g in enumerate(step_grads) if g is not None]
        g = {i: np.asarray(step_grads[i], dtype) for i in present}
        if max_norm is not None:
            total = np.sqrt(sum(np.sum(g[i] ** 2) for i in present))
            coef = max_norm / (total + 1e-6)
            clipped.append(bool(coef < 1))
            if coef < 1:
                g = {i: g[i] * coef for i in present}
        for i in present:
            d = g[i] + (weight_decay * w[i] if decay_mask[i] else 0.0)
            if momentum:
                if buffers[i] is None:
                    buffers[i] = d.copy()
                else:
                    buffers[i] = momentum * buffers[i] + d
                d = d + momentum * buffers[i] if nesterov else buffers[i]
            w[i] = w[i] - lr * d
    return w, buffers, clipped


def schedule_rates(steps, base, warmup_steps, warmup_ratio, milestones, gamma=0.1):
    """mmdetection's linear warm-up and step decay, written out per step."""
    rates = []
    for t in range(steps):
        rate = base * gamma ** sum(t >= m for m in milestones)
        if warmup_steps:
            rate *= warmup_ratio + (1 - warmup_ratio) * min(t / warmup_steps, 1.0)
        rates.append(rate)
    return rates


def random_problem(seed, steps, norm_range=(15.0, 60.0), weight_scale=1.0):
    """Weights and a gradient sequence whose global norms span `norm_range`."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, weight_scale, s).astype("float32") for s in SHAPES]
    grads = []
    for _ in range(steps):
        step = [rng.normal(0, 1, s) for s in SHAPES]
        norm = np.sqrt(sum(np.sum(g**2) for g in step))
        target = rng.uniform(*norm_range)
        grads.append([(g * target / norm).astype("float32") for g in step])
    return weights, grads


def run_eagerly(optimizer, weights, grads):
    """Applies `grads` (None: no gradient for that variable) step by step."""
    variables = [keras.Variable(w) for w in weights]
    optimizer.build(variables)
    for step in grads:
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(step, variables, strict=True) if g is not None]
        )
    return [keras.ops.convert_to_numpy(v) for v in variables]


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)


def displacement_error(ours, ref, initial):
    """|ours - ref| relative to how far the reference moved the weights."""
    ref = flat(ref)
    return np.linalg.norm(flat(ours) - ref) / np.linalg.norm(ref - flat(initial))


def assert_same_weights(ours, ref, initial, displacement_tolerance=2e-5):
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    assert displacement_error(ours, ref, initial) < displacement_tolerance


def test_warmup_step_schedule_values():
    schedule = keras_solov2.WarmupStepSchedule(
        base_learning_rate=0.01,
        milestones=(1000, 2000),
        warmup_steps=500,
        warmup_ratio=0.01,
    )
    values = [float(schedule(s)) for s in (0, 250, 500, 999, 1000, 1999, 2000)]
    expected = [1e-4, 0.01 * (0.01 + 0.99 * 0.5), 0.01, 0.01, 1e-3, 1e-3, 1e-4]
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_official_recipe():
    optimizer, epochs = keras_solov2.solov2_optimizer(
        steps_per_epoch=100, schedule="3x"
    )
    assert epochs == 36
    assert isinstance(optimizer, TorchSGD)
    assert optimizer.momentum == 0.9
    assert optimizer.weight_decay == pytest.approx(1e-4)
    assert optimizer.max_grad_norm == 35.0
    assert optimizer.nesterov is False
    assert optimizer.global_clipnorm is None and optimizer.clipnorm is None
    schedule = optimizer.get_config()["learning_rate"]["config"]
    assert tuple(schedule["milestones"]) == (2700, 3300)
    rebuilt = keras_solov2.WarmupStepSchedule(**schedule)
    assert float(rebuilt(10_000)) == pytest.approx(0.01 * 0.01)
    _, epochs_1x = keras_solov2.solov2_optimizer(steps_per_epoch=10, schedule="1x")
    assert epochs_1x == 12
    with pytest.raises(ValueError, match="schedule"):
        keras_solov2.solov2_optimizer(steps_per_epoch=10, schedule="2x")


def test_matches_torch_rule_through_the_warmup():
    """25 steps from step 0 of the recipe's warm-up: the rate changes every step."""
    steps = 25
    weights, grads = random_problem(seed=0, steps=steps)
    optimizer, _ = keras_solov2.solov2_optimizer(steps_per_epoch=1000)
    rates = schedule_rates(steps, 0.01, 500, 0.01, (27_000, 33_000))
    ref, _, clipped = torch_sgd_reference(weights, grads, rates, 0.9, 1e-4, 35.0)
    assert 3 <= sum(clipped) <= steps - 3, clipped
    assert_same_weights(run_eagerly(optimizer, weights, grads), ref, weights)


def test_matches_torch_rule_across_step_decays_and_missing_gradients():
    # Warm-up over 6 steps, then decays at steps 18 and 22 (epochs 9 and 11).
    steps = 26
    weights, grads = random_problem(seed=1, steps=steps)
    grads[0][2] = None  # first momentum buffer of variable 2 at step 1
    grads[7][1] = grads[8][1] = None  # no update, no decay, buffer kept
    optimizer, _ = keras_solov2.solov2_optimizer(
        steps_per_epoch=2, schedule="1x", warmup_steps=6
    )
    rates = schedule_rates(steps, 0.01, 6, 0.01, (18, 22))
    ref, _, clipped = torch_sgd_reference(weights, grads, rates, 0.9, 1e-4, 35.0)
    assert 3 <= sum(clipped) <= steps - 3, clipped
    assert_same_weights(run_eagerly(optimizer, weights, grads), ref, weights)


def keras_sgd_recipe(learning_rate):
    """What `solov2_optimizer` used to return."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate,
        momentum=0.9,
        weight_decay=1e-4,
        global_clipnorm=35.0,
    )


def test_keras_sgd_fails_the_same_comparison():
    """The comparison above discriminates: Keras' SGD misses it by far."""
    steps = 25
    weights, grads = random_problem(seed=0, steps=steps)
    schedule = keras_solov2.WarmupStepSchedule(milestones=(27_000, 33_000))
    rates = schedule_rates(steps, 0.01, 500, 0.01, (27_000, 33_000))
    ref, _, _ = torch_sgd_reference(weights, grads, rates, 0.9, 1e-4, 35.0)
    keras_weights = run_eagerly(keras_sgd_recipe(schedule), weights, grads)
    assert displacement_error(keras_weights, ref, weights) > 0.1

    # Across a decay from a constant rate (steps 0-9 at 0.01, then 1e-3).
    schedule = keras_solov2.WarmupStepSchedule(milestones=(10,), warmup_steps=0)
    rates = schedule_rates(20, 0.01, 0, 0.01, (10,))
    ref, _, _ = torch_sgd_reference(weights, grads[:20], rates, 0.9, 1e-4, 35.0)
    keras_weights = run_eagerly(keras_sgd_recipe(schedule), weights, grads[:20])
    assert displacement_error(keras_weights, ref, weights) > 0.1
    ours = run_eagerly(
        TorchSGD(schedule, momentum=0.9, weight_decay=1e-4, max_grad_norm=35.0),
        weights,
        grads[:20],
    )
    assert_same_weights(ours, ref, weights)


def test_coupled_decay_is_about_ten_times_keras_decay():
    """Zero gradients at a constant rate: only the decay moves the weights."""
    steps, rate = 300, 0.01
    weights, _ = random_problem(seed=2, steps=0)
    zeros = [[np.zeros_like(w) for w in weights]] * steps
    # Each step moves the weights by about 1e-5 of their value, close to
    # float32's resolution, so the reference rounds in float32 as torch would.
    ref, _, _ = torch_sgd_reference(
        weights, zeros, [rate] * steps, 0.9, 1e-4, dtype=np.float32
    )
    ours = run_eagerly(TorchSGD(rate, 0.9, 1e-4), weights, zeros)
    assert_same_weights(ours, ref, weights)
    keras_weights = run_eagerly(
        keras.optimizers.SGD(rate, momentum=0.9, weight_decay=1e-4), weights, zeros
    )
    shrink = lambda w: 1.0 - flat(w) @ flat(weights) / (flat(weights) @ flat(weights))
    # sum over t of (1 - 0.9^(t+1)) / (1 - 0.9) relative to 300 steps: 9.7.
    assert shrink(ours) / shrink(keras_weights) == pytest.approx(9.7, rel=0.02)


def test_nesterov_and_exclusions_match_reference():
    steps = 20
    weights, grads = random_problem(seed=3, steps=steps)
    rates = schedule_rates(steps, 0.01, 10, 0.1, (15,))
    schedule = keras_solov2.WarmupStepSchedule(
        milestones=(15,), warmup_steps=10, warmup_ratio=0.1
    )
    optimizer = TorchSGD(
        schedule, momentum=0.9, weight_decay=1e-2, nesterov=True, max_grad_norm=35.0
    )
    variables = [keras.Variable(w, name=f"v{i}") for i, w in enumerate(weights)]
    optimizer.exclude_from_weight_decay(var_list=[variables[1]])
    optimizer.build(variables)
    for step in grads:
        optimizer.apply(step, variables)
    ref, _, _ = torch_sgd_reference(
        weights, grads, rates, 0.9, 1e-2, 35.0, True, [True, False, True]
    )
    ours = [keras.ops.convert_to_numpy(v) for v in variables]
    assert_same_weights(ours, ref, weights)


def test_gradient_accumulation_clips_the_averaged_gradients():
    # Every micro-step gradient has a norm above 35; in odd pairs the second
    # half cancels most of the first, so that their mean is not clipped.
    weights, firsts = random_problem(seed=4, steps=6, norm_range=(40.0, 90.0))
    grads, averaged = [], []
    for t, first in enumerate(firsts):
        second = [g * (-0.5 if t % 2 else 1.0) for g in first]
        grads += [first, second]
        averaged.append([(a + b) / 2 for a, b in zip(first, second, strict=True)])
    ref, _, clipped = torch_sgd_reference(weights, averaged, [0.01] * 6, 0.9, 1e-4, 35)
    assert clipped == [True, False] * 3
    optimizer = TorchSGD(
        0.01, 0.9, 1e-4, max_grad_norm=35.0, gradient_accumulation_steps=2
    )
    assert_same_weights(run_eagerly(optimizer, weights, grads), ref, weights)


def test_config_round_trip_and_refused_arguments():
    optimizer, _ = keras_solov2.solov2_optimizer(steps_per_epoch=10)
    config = keras.optimizers.serialize(optimizer)
    rebuilt = keras.optimizers.deserialize(config)
    assert type(rebuilt) is TorchSGD
    assert rebuilt.get_config() == optimizer.get_config()
    assert isinstance(rebuilt._learning_rate, keras_solov2.WarmupStepSchedule)
    for name in ("clipnorm", "clipvalue", "global_clipnorm"):
        with pytest.raises(ValueError, match="max_grad_norm"):
            TorchSGD(**{name: 1.0})
    with pytest.raises(ValueError, match="nesterov"):
        TorchSGD(nesterov=True)
    with pytest.raises(ValueError, match="max_grad_norm"):
        TorchSGD(max_grad_norm=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        TorchSGD(weight_decay=-1.0)


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
        from test_optimizers import check_fit_and_reload
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
