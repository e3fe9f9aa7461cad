"""Focal and dice losses against hand-derived values."""

import math

import numpy as np

from keras_solov2.losses import dice_loss, sigmoid_focal_loss


def test_focal_loss_at_zero_logit():
    # p = 0.5: BCE = log 2, (1 - p_t)^2 = 1/4; alpha 0.25 for t=1, 0.75 for t=0.
    loss = np.asarray(sigmoid_focal_loss(np.zeros(2, "float32"), np.array([1.0, 0.0])))
    np.testing.assert_allclose(
        loss, [0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)], rtol=1e-6
    )


def test_focal_loss_matches_the_formula_and_is_stable():
    x = np.array([-30.0, -2.0, 0.7, 3.0, 40.0], "float32")
    for t in (0.0, 1.0):
        xd = x.astype(np.float64)
        p = 1 / (1 + np.exp(-xd))
        bce = np.logaddexp(0.0, xd) - t * xd  # -log(sigmoid) terms, stable
        pt = p if t else 1 - p
        alpha = 0.25 if t else 0.75
        expected = alpha * (1 - pt) ** 2 * bce
        got = np.asarray(sigmoid_focal_loss(x, np.full_like(x, t)))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
        assert np.all(np.isfinite(got))


def test_dice_loss_values():
    n = 100
    targets = np.ones((1, n), "float32")
    # p = 0.5 everywhere: a = 50, b = 25 + eps, c = 100 + eps.
    half = np.asarray(dice_loss(np.zeros((1, n), "float32"), targets))
    np.testing.assert_allclose(half, [1 - 100 / (125 + 2e-3)], rtol=1e-6)
    # A confident, correct prediction gives ~0; a confident wrong one ~1.
    mixed = np.array([[1.0] * 50 + [0.0] * 50], "float32")
    logits = np.where(mixed > 0, 50.0, -50.0).astype("float32")
    assert float(dice_loss(logits, mixed)[0]) < 1e-4
    assert float(dice_loss(-logits, mixed)[0]) > 1 - 1e-4
    # Empty target and empty prediction: eps keeps it finite (loss 1 - 0 = 1).
    empty = np.asarray(dice_loss(np.full((1, n), -50.0, "float32"), np.zeros((1, n))))
    assert np.isfinite(empty).all()
