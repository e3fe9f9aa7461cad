"""`TorchSGD` against real PyTorch and mmengine, step by step.

The mmdetection harness venv (`../shared/reference/mmdet/setup.sh`, by default
at /tmp/mmref/venv) has torch 2.13 and mmengine 0.10.7. A subprocess with that
Python runs `torch.nn.utils.clip_grad_norm_` + `torch.optim.SGD`, and
mmengine's `OptimWrapper(clip_grad=dict(max_norm=..., norm_type=2))` around
the same SGD, on the weights, gradients and rates that this process writes to
an `.npz` (a zip of `.npy` files); the weights come back the same way.
"""

import json
import os
import subprocess
import textwrap

import keras
import numpy as np
import pytest
from sgd_reference import (
    assert_same_weights,
    displacement_error,
    keras_sgd_recipe,
    random_problem,
    run_eagerly,
    schedule_rates,
)

import keras_solov2
from keras_solov2.optimizers import TorchSGD

pytestmark = pytest.mark.parity

MMREF_ROOT = os.environ.get("MMREF_ROOT", "/tmp/mmref")
TORCH_PYTHON = os.path.join(MMREF_ROOT, "venv", "bin", "python")

TORCH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from mmengine.optim import OptimWrapper

    data = dict(np.load(sys.argv[1]))
    config = json.loads(sys.argv[2])
    rates = data.pop("rates")
    count = sum(key.startswith("w") for key in data)

    def run(wrapped):
        params = [
            torch.nn.Parameter(torch.from_numpy(data[f"w{i}"].copy()))
            for i in range(count)
        ]
        optimizer = torch.optim.SGD(
            params,
            lr=float(rates[0]),
            momentum=config["momentum"],
            weight_decay=config["weight_decay"],
            nesterov=config["nesterov"],
        )
        clip = dict(max_norm=config["max_norm"], norm_type=2)
        wrapper = OptimWrapper(optimizer, clip_grad=clip)
        for step, rate in enumerate(rates):
            for i, param in enumerate(params):
                grad = data.get(f"g{step}_{i}")
                param.grad = None if grad is None else torch.from_numpy(grad.copy())
            for group in optimizer.param_groups:
                group["lr"] = float(rate)
            if wrapped:
                wrapper.step()
            else:
                with_grad = [p for p in params if p.grad is not None]
                torch.nn.utils.clip_grad_norm_(with_grad, **clip)
                optimizer.step()
        return [p.detach().numpy() for p in params]

    out = {}
    for name, wrapped in (("torch", False), ("mmengine", True)):
        for i, weights in enumerate(run(wrapped)):
            out[f"{name}{i}"] = weights
    np.savez(sys.argv[3], **out)
    print("TORCH-OK", torch.__version__)
    """
)


def run_torch(directory, weights, grads, rates, **config):
    """Returns (torch weights, mmengine weights) for the same problem."""
    if not os.path.exists(TORCH_PYTHON):
        pytest.skip(
            f"{TORCH_PYTHON} not found: the parity check needs the mmdetection "
            "harness venv (bash ../shared/reference/mmdet/setup.sh, MMREF_ROOT "
            "to move it)."
        )
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    for t, step in enumerate(grads):
        arrays.update({f"g{t}_{i}": g for i, g in enumerate(step) if g is not None})
    arrays["rates"] = np.asarray(rates, np.float64)
    inputs, outputs = directory / "inputs.npz", directory / "outputs.npz"
    np.savez(inputs, **arrays)
    result = subprocess.run(
        [TORCH_PYTHON, "-c", TORCH_SCRIPT, inputs, json.dumps(config), outputs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "TORCH-OK" in result.stdout, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
    out = np.load(outputs)
    count = len(weights)
    return [out[f"torch{i}"] for i in range(count)], [
        out[f"mmengine{i}"] for i in range(count)
    ]


def test_recipe_matches_torch_and_mmengine(tmp_path):
    """The recipe's warm-up (15 steps), then decays at steps 18 and 22."""
    steps = 26
    weights, grads = random_problem(seed=10, steps=steps)
    grads[0][2] = None
    grads[9][1] = grads[10][1] = None
    rates = schedule_rates(steps, 0.01, 15, 0.01, (18, 22))
    torch_weights, mmengine_weights = run_torch(
        tmp_path,
        weights,
        grads,
        rates,
        momentum=0.9,
        weight_decay=1e-4,
        nesterov=False,
        max_norm=35.0,
    )
    for a, b in zip(mmengine_weights, torch_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    optimizer, _ = keras_solov2.solov2_optimizer(
        steps_per_epoch=2, schedule="1x", warmup_steps=15
    )
    ours = run_eagerly(optimizer, weights, grads)
    assert_same_weights(ours, torch_weights, weights)

    old = keras_sgd_recipe(
        keras_solov2.WarmupStepSchedule(milestones=(18, 22), warmup_steps=15)
    )
    old_weights = run_eagerly(old, weights, grads)
    assert displacement_error(old_weights, torch_weights, weights) > 0.1


def test_nesterov_and_strong_decay_match_torch(tmp_path):
    steps = 20
    weights, grads = random_problem(seed=11, steps=steps)
    rates = schedule_rates(steps, 0.05, 8, 0.1, (14,))
    torch_weights, _ = run_torch(
        tmp_path,
        weights,
        grads,
        rates,
        momentum=0.8,
        weight_decay=1e-2,
        nesterov=True,
        max_norm=30.0,
    )
    schedule = keras_solov2.WarmupStepSchedule(
        base_learning_rate=0.05, milestones=(14,), warmup_steps=8, warmup_ratio=0.1
    )
    optimizer = TorchSGD(schedule, 0.8, 1e-2, nesterov=True, max_grad_norm=30.0)
    assert_same_weights(run_eagerly(optimizer, weights, grads), torch_weights, weights)
    keras_weights = run_eagerly(
        keras.optimizers.SGD(
            schedule,
            momentum=0.8,
            nesterov=True,
            weight_decay=1e-2,
            global_clipnorm=30.0,
        ),
        weights,
        grads,
    )
    assert displacement_error(keras_weights, torch_weights, weights) > 0.1
