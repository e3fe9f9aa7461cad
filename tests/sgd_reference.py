"""The reference that the optimizer tests compare `TorchSGD` with.

`torch_sgd_reference` is an independent float64 implementation of what
mmdetection does in each step: `torch.nn.utils.clip_grad_norm_` on the
parameters that have a gradient (mmengine's `OptimWrapper`), then
`torch.optim.SGD.step()` (dampening 0, maximize False); the rest are the
problems, the schedules and the comparisons that test_optimizers.py,
test_optimizers_fit.py and test_optimizers_torch.py share.
"""

import keras
import numpy as np

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


def keras_sgd_recipe(learning_rate):
    """What `solov2_optimizer` used to return."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate,
        momentum=0.9,
        weight_decay=1e-4,
        global_clipnorm=35.0,
    )
