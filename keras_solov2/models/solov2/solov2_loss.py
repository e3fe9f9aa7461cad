"""SOLOv2's training loss: focal loss on the category grid, dice on the masks."""

import keras
from keras import ops

from keras_solov2.losses.dice import dice_loss
from keras_solov2.losses.focal import sigmoid_focal_loss

TARGET_KEYS = ("masks", "labels", "boxes")
# The readers' default form of the masks (`mask_targets="compact"`).
COMPACT_MASK_KEYS = ("mask_targets", "mask_centers", "mask_areas")
# How the loss is normalised under `tf.distribute` (`SOLOv2`'s argument).
LOSS_NORMALIZATIONS = ("global", "per_replica")


def check_targets(y):
    """Raises a `ValueError` unless `y` holds SOLOv2's target tensors: labels,
    boxes, and the masks either full (`masks`) or compact (`mask_targets`,
    `mask_centers`, `mask_areas`, as `keras_solov2.data` ships them)."""
    if y is None:
        raise ValueError(
            "SOLOv2 needs targets to compute its loss: the dataset must yield "
            "(images, {'masks', 'labels', 'boxes'})."
        )
    for key in TARGET_KEYS[1:]:
        if key not in y:
            raise ValueError(f"SOLOv2 targets lack the key {key!r}; got {sorted(y)}.")
    compact = [key for key in COMPACT_MASK_KEYS if key in y]
    if "masks" not in y and len(compact) != len(COMPACT_MASK_KEYS):
        raise ValueError(
            "SOLOv2 targets need the masks: either 'masks' (B, M, H, W) or the "
            f"compact {COMPACT_MASK_KEYS} of keras_solov2.data's readers; got "
            f"{sorted(y)}."
        )


def solov2_loss(
    outputs,
    targets,
    target_encoder,
    num_classes,
    focal_alpha=0.25,
    focal_gamma=2.0,
    mask_loss_weight=3.0,
    reduce_num_pos=None,
):
    """The loss of mmdetection's `SOLOV2Head.loss_by_feat`, vectorised.

    1. `target_encoder` assigns the category targets and the positive
       (instance, cell) pairs (see `keras_solov2.layers.SOLOv2TargetEncoder`).
    2. Category loss: sigmoid focal loss summed over every cell and class,
       divided by `num_pos + 1`, where `num_pos` is the number of positive
       cells in the batch.
    3. Mask loss: each positive pair's kernel is convolved (a 1x1 dynamic
       conv, here an einsum) with the mask features; the dice loss of the
       result against the instance's mask, summed over the pairs, divided by
       `max(num_pos, 1)` and weighted by `mask_loss_weight`.

    Args:
        outputs: dict of the network's dense outputs, `category_logits`
            `(batch, cells, C)`, `kernels` `(batch, cells, E)` and
            `mask_features` `(batch, h, w, E)`.
        targets: dict with `labels` `(batch, M)` (`-1` for padding),
            `boxes` `(batch, M, 4)` and either `masks` `(batch, M, H, W)` or
            the compact `mask_targets`, `mask_centers` and `mask_areas` (see
            `SOLOv2TargetEncoder`).
        target_encoder: a `SOLOv2TargetEncoder`.
        num_classes: int.
        focal_alpha: float. Defaults to `0.25`.
        focal_gamma: float. Defaults to `2.0`.
        mask_loss_weight: float. Defaults to `3.0`.
        reduce_num_pos: optional function applied to `num_pos` before it
            divides, e.g. a sum over `tf.distribute` replicas. Defaults to
            `None` (this batch's own count).

    Returns:
        dict of float32 scalars: `category_loss`, `mask_loss` and
        `positives_overflow` (pairs beyond the encoder's cap, dropped).

    Reference: SOLOv2, arXiv 2003.10152; the loss is SOLO's, arXiv 1912.04488.
    """
    logits = ops.cast(outputs["category_logits"], "float32")
    kernels = ops.cast(outputs["kernels"], "float32")
    mask_features = ops.cast(outputs["mask_features"], "float32")
    batch = ops.shape(logits)[0]
    cells = logits.shape[1]
    h, w = ops.shape(mask_features)[1], ops.shape(mask_features)[2]
    channels = mask_features.shape[3]
    if "masks" in targets:
        encoded = target_encoder(
            targets["masks"], targets["labels"], targets["boxes"], mask_size=(h, w)
        )
    else:
        encoded = target_encoder(
            targets["mask_targets"],
            targets["labels"],
            targets["boxes"],
            mask_size=(h, w),
            centers=targets["mask_centers"],
            areas=targets["mask_areas"],
        )

    category = encoded["category_targets"]
    one_hot = ops.one_hot(
        ops.where(category >= 0, category, num_classes), num_classes + 1
    )[..., :num_classes]
    num_pos = ops.cast(ops.sum(encoded["num_positive_cells"]), "float32")
    if reduce_num_pos is not None:
        num_pos = reduce_num_pos(num_pos)
    category_loss = ops.sum(
        sigmoid_focal_loss(logits, one_hot, focal_alpha, focal_gamma)
    ) / (num_pos + 1.0)

    batch_index = ops.expand_dims(ops.arange(batch, dtype="int32"), 1)
    pair_kernels = ops.take(
        ops.reshape(kernels, (-1, channels)),
        batch_index * cells + encoded["pair_cells"],
        axis=0,
    )
    mask_targets = encoded["mask_targets"]
    num_instances = ops.shape(mask_targets)[1]
    pair_targets = ops.take(
        ops.reshape(mask_targets, (-1, h * w)),
        batch_index * num_instances + encoded["pair_instances"],
        axis=0,
    )
    features = ops.reshape(mask_features, (batch, h * w, channels))
    mask_logits = ops.einsum("bpe,bne->bpn", pair_kernels, features)
    per_pair = ops.where(
        encoded["pair_valid"], dice_loss(mask_logits, pair_targets), 0.0
    )
    mask_loss = mask_loss_weight * ops.sum(per_pair) / ops.maximum(num_pos, 1.0)
    return {
        "category_loss": category_loss,
        "mask_loss": mask_loss,
        "positives_overflow": ops.cast(
            ops.sum(encoded["positives_overflow"]), "float32"
        ),
    }


def check_loss_normalization(value):
    """`value` if it is one of `LOSS_NORMALIZATIONS`, else a `ValueError`."""
    if value not in LOSS_NORMALIZATIONS:
        raise ValueError(
            f"`loss_normalization` must be one of {LOSS_NORMALIZATIONS}; got {value!r}."
        )
    return value


def task_loss(model, x, y, y_pred):
    """`SOLOv2.compute_loss`: the total loss of a batch, its parts logged.

    Checks the targets and the canvas, computes `solov2_loss` with the
    model's settings, updates the model's `category_loss`, `mask_loss` and
    `positives_overflow` trackers and adds the regularisation losses.

    Under `tf.distribute`, `model.loss_normalization` decides the divisor:
    with `"global"` each replica's `num_pos` is the sum over the replicas.
    Keras' TF trainer sums the replicas' gradients and logs the loss times
    the replica count, averaged, so each replica returns its share of the
    global loss: with a global `num_pos` the replicas' own sums are those
    shares; per replica, each loss is 1/N of a mean.
    """
    check_targets(y)
    if x is not None:
        check_canvas(x, model.size_divisor)
    num_replicas, replica_sum = replicas()
    is_global = model.loss_normalization == "global"
    losses = solov2_loss(
        y_pred,
        y,
        model.target_encoder,
        model.num_classes,
        focal_alpha=model.focal_alpha,
        focal_gamma=model.focal_gamma,
        mask_loss_weight=model.mask_loss_weight,
        reduce_num_pos=replica_sum if is_global else None,
    )
    share = 1.0 if is_global else 1.0 / num_replicas
    # The trackers average over the replicas: give them the global value.
    logged = num_replicas if is_global else 1.0
    model.category_loss_tracker.update_state(losses["category_loss"] * logged)
    model.mask_loss_tracker.update_state(losses["mask_loss"] * logged)
    model.positives_overflow_tracker.update_state(losses["positives_overflow"])
    total = (losses["category_loss"] + losses["mask_loss"]) * share
    for extra in model.losses:  # regularisation losses, if any: once
        total = total + ops.cast(extra, "float32") / num_replicas
    return total


def check_canvas(images, divisor):
    """Raises a `ValueError` if the training images' static height or width
    is not a multiple of `size_divisor`."""
    if isinstance(images, dict):
        images = images.get("images")
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        return
    for axis, name in ((1, "height"), (2, "width")):
        if isinstance(shape[axis], int) and shape[axis] % divisor:
            raise ValueError(
                f"Training images must be padded to a multiple of "
                f"size_divisor={divisor}; got {name} {shape[axis]} (images "
                f"{tuple(shape)}). The readers in keras_solov2.data do this; "
                "for your own arrays use "
                "keras_solov2.utils.image_geometry.pad_with_mean."
            )


def replicas():
    """`(num_replicas, sum_over_replicas)` in a `tf.distribute` replica
    context, else `(1, None)` (one device, and JAX, whose distributed step
    computes the loss on the global batch)."""
    if keras.backend.backend() != "tensorflow":
        return 1, None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1, None

    def replica_sum(value):
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    return context.num_replicas_in_sync, replica_sum
