from keras import ops


def point_nms(scores, num_grids):
    """SOLO's "point NMS" on flattened per-level category scores.

    A cell keeps its score only where it equals the max of the 2x2 window made
    of itself and its upper, left and upper-left neighbours (mmdet's
    `max_pool2d(k=2, s=1, p=1)[..., :-1, :-1] == score`); other scores become 0.
    Scores must be non-negative (sigmoid outputs), so zero padding is the same
    as PyTorch's -inf padding.

    Args:
        scores: `(batch, sum(S^2), C)` scores, levels concatenated row-major.
        num_grids: tuple of grid sizes S.

    Returns:
        Tensor like `scores`.
    """
    channels = scores.shape[-1]
    outputs, start = [], 0
    for grid in num_grids:
        level = ops.reshape(
            scores[:, start : start + grid * grid], (-1, grid, grid, channels)
        )
        padded = ops.pad(level, ((0, 0), (1, 0), (1, 0), (0, 0)))
        local_max = ops.max_pool(padded, pool_size=2, strides=1, padding="valid")
        kept = ops.where(local_max == level, level, ops.zeros_like(level))
        outputs.append(ops.reshape(kept, (-1, grid * grid, channels)))
        start += grid * grid
    return ops.concatenate(outputs, axis=1)
