from keras import ops


def dice_loss(logits, targets, epsilon=1e-3):
    """Dice loss per mask, SOLO's non-naive form (arXiv 1912.04488).

    `1 - 2 sum(p t) / (sum(p^2) + eps + sum(t^2) + eps)` with
    `p = sigmoid(logits)`, reduced over the last axis.

    Args:
        logits: `(..., pixels)` mask logits.
        targets: `(..., pixels)` 0/1 targets.
        epsilon: float. Added to each squared sum. Defaults to `1e-3`.

    Returns:
        `(...)` loss per mask.
    """
    probs = ops.sigmoid(ops.cast(logits, "float32"))
    targets = ops.cast(targets, "float32")
    a = ops.sum(probs * targets, axis=-1)
    b = ops.sum(probs * probs, axis=-1) + epsilon
    c = ops.sum(targets * targets, axis=-1) + epsilon
    return 1.0 - 2.0 * a / (b + c)
