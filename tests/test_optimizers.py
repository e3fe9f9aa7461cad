"""The SOLOv2 recipe, and `TorchSGD` against PyTorch's update rule.

`torch_sgd_reference` (in sgd_reference.py) is an independent float64
implementation of what mmdetection does in each step:
`torch.nn.utils.clip_grad_norm_` on the parameters that have a gradient
(mmengine's `OptimWrapper`), then `torch.optim.SGD.step()` (dampening 0,
maximize False). The expected values of these tests come from it, never from
the code under test; the comparison with real torch is in
`test_optimizers_torch.py`, `fit`, saving and tf.distribute in
`test_optimizers_fit.py`.
"""

import keras
import numpy as np
import pytest
from sgd_reference import (
    assert_same_weights,
    displacement_error,
    flat,
    keras_sgd_recipe,
    random_problem,
    run_eagerly,
    schedule_rates,
    torch_sgd_reference,
)

import keras_solov2
from keras_solov2.optimizers import TorchSGD


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
