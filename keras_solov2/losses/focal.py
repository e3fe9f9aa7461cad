from keras import ops


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Element-wise sigmoid focal loss (Lin et al., arXiv 1708.02002).

    `loss = BCE(logits, t) * (alpha t + (1 - alpha)(1 - t)) * (1 - p_t)^gamma`
    with `p_t = p t + (1 - p)(1 - t)`, the form of mmdetection's
    `py_sigmoid_focal_loss`. The binary cross-entropy is computed from the
    logits in the numerically stable form.

    Args:
        logits: float tensor, any shape.
        targets: same shape, 0/1.
        alpha: float. Positive-class weight. Defaults to `0.25`.
        gamma: float. Focusing exponent. Defaults to `2.0`.

    Returns:
        The un-reduced loss, same shape as `logits`.
    """
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    probs = ops.sigmoid(logits)
    bce = (
        ops.maximum(logits, 0.0)
        - logits * targets
        + ops.log1p(ops.exp(-ops.abs(logits)))
    )
    one_minus_pt = probs * (1.0 - targets) + (1.0 - probs) * targets
    weight = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * ops.power(
        one_minus_pt, gamma
    )
    return bce * weight
