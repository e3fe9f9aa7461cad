"""Masks at the photo's size from SOLOv2's feature-resolution probabilities:
`paste_masks`, `masks_to_boxes` and `feature_boxes`.

The last step of `SOLOv2Decoder` (with `mask_resolution="original"`), of the
predict engines that stop the decoder before it, and of the exported
models' hosts.
"""

import functools

import keras
from keras import ops

from keras_solov2.layers.live_settings import number, positive_int
from keras_solov2.layers.spatial import resize
from keras_solov2.utils import image_geometry

# Detections resized to the original size at a time (a piece). Each needs
# about 4 * H * W bytes of scratch memory (50 MB for a 12 MP photo).
PASTE_CHUNK_SIZE = 2
# Pieces resized at the same time in TensorFlow's graph (not under XLA):
# its bilinear resize runs on one core, so two pieces use two. Scratch
# memory is that of PASTE_PIECES_IN_FLIGHT * PASTE_CHUNK_SIZE detections.
PASTE_PIECES_IN_FLIGHT = 2


def paste_masks(
    mask_probs,
    resized_size,
    original_size,
    mask_threshold=0.5,
    mask_stride=image_geometry.MASK_STRIDE,
    num_detections=None,
    chunk_size=PASTE_CHUNK_SIZE,
    return_boxes=False,
):
    """Masks at the original image size from feature-resolution probabilities.

    The last step of SOLOv2's decoding, as in mmdetection: each probability
    map is upsampled x`mask_stride` (bilinear, half-pixel centres, as
    PyTorch's `F.interpolate(align_corners=False)`) to the padded network
    input, cropped to the resized image, resized to the original image and
    thresholded (`> mask_threshold`). Given the `"mask_probs"` of a
    `SOLOv2Decoder(mask_resolution="features")` (or of an exported model)
    and the same settings, the result equals the default decoder's
    `"masks"` bit for bit.

    Only detections below `num_detections` are resized, `chunk_size` at a
    time, each written into the output buffer in place (XLA, `jax.jit`,
    TensorFlow's graph and eager modes; called eagerly, it runs itself as a
    `jax.jit` program on JAX, and as a TensorFlow graph traced once for all
    photo sizes on TensorFlow). Scratch memory is then about
    `chunk_size * 4 * H * W` bytes beside the `batch * D * H * W` bytes of
    the masks, twice that in TensorFlow's graph, which resizes
    `PASTE_PIECES_IN_FLIGHT` (2) pieces at the same time, one per core. It
    runs eagerly, in a `tf.function` (also with dynamic sizes), under
    `jit_compile=True` and on JAX.

    Args:
        mask_probs: float `(batch, D, h, w)` mask probabilities at
            `1 / mask_stride` of the padded input; `D` must be static.
        resized_size: `(height, width)` of the resized, unpadded image inside
            the padded input, e.g.
            `model.image_converter.resized_size(H, W)`.
        original_size: `(height, width)` of the original image.
        mask_threshold: float. Defaults to `0.5`.
        mask_stride: int. The stride of `mask_probs`: pass the model's
            `model.decoder.mask_stride` (its backbone's `mask_stride`).
            Defaults to `4` (`keras_solov2.utils.image_geometry.MASK_STRIDE`,
            the ResNet-FPN backbone's).
        num_detections: optional int `(batch,)`. Slots from
            `num_detections[b]` on are returned empty (and not resized).
            Defaults to `None`: all `D` slots are resized.
        chunk_size: int >= 1. Detections resized at a time. Defaults to
            `PASTE_CHUNK_SIZE` (2).
        return_boxes: bool. Also return the tight `[x1, y1, x2, y2]` boxes of
            the masks (as `masks_to_boxes`), computed piece by piece.
            Defaults to `False`.

    Returns:
        bool `(batch, D, H, W)` masks, or `(masks, boxes)` with float32
        `(batch, D, 4)` boxes if `return_boxes`.

    Example:
    >>> model = keras_solov2.SOLOv2.from_preset(
    ...     "light_r18", load_weights=False, mask_resolution="features")
    >>> image = np.zeros((1, 3000, 4000, 3), "uint8")
    >>> out = model.predict(image)
    >>> masks = keras_solov2.layers.paste_masks(
    ...     out["mask_probs"],
    ...     model.image_converter.resized_size(3000, 4000),
    ...     (3000, 4000),
    ...     mask_threshold=model.mask_threshold,
    ...     mask_stride=model.decoder.mask_stride,
    ...     num_detections=out["num_detections"])

    Reference: SOLOv2, arXiv 2003.10152 (mmdetection's `SOLOV2Head`).
    """
    mask_probs = ops.convert_to_tensor(mask_probs)
    if len(mask_probs.shape) != 4 or mask_probs.shape[1] is None:
        raise ValueError(
            "`mask_probs` must be (batch, D, h, w) with a static D; got shape "
            f"{mask_probs.shape}."
        )
    masks, boxes = _paste(
        mask_probs,
        resized_size,
        original_size,
        number("mask_threshold", mask_threshold, 0.0, 1.0),
        positive_int("mask_stride", mask_stride),
        num_detections,
        positive_int("chunk_size", chunk_size),
    )
    return (masks, boxes) if return_boxes else masks


def masks_to_boxes(masks):
    """Tight `[x1, y1, x2, y2]` boxes (pixel edges) of `(..., H, W)` masks.

    Nonzero pixels count as the mask. Empty masks give all-zero boxes. Only
    the row and column occupancy (`(..., H)` and `(..., W)`) is
    materialised, never a converted copy of the masks.
    """
    masks = ops.convert_to_tensor(masks)
    if masks.dtype != "bool":
        masks = ops.not_equal(masks, 0)
    return _occupancy_boxes(ops.any(masks, axis=-1), ops.any(masks, axis=-2))


def _paste(mask_probs, resized_size, original_size, *args):
    """`(masks, boxes)` at the original size, piece by piece (see paste_masks)."""
    if keras.backend.backend() == "jax" and not _is_jax_tracer(mask_probs):
        # Eagerly, JAX would copy the whole output at every piece.
        resized_size = tuple(int(v) for v in resized_size)
        original_size = tuple(int(v) for v in original_size)
        return _jitted_paste()(mask_probs, resized_size, original_size, *args)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():
            # Eagerly, TensorFlow would run the loop op by op, one piece at
            # a time (about 6x slower for 100 masks at 480x640).
            return _graph_paste(mask_probs, resized_size, original_size, *args)
    return _paste_pieces(mask_probs, resized_size, original_size, *args)


def _paste_pieces(
    mask_probs,
    resized_size,
    original_size,
    mask_threshold,
    mask_stride,
    num_detections,
    chunk_size,
):
    mask_probs = ops.cast(mask_probs, "float32")
    slots = mask_probs.shape[1]
    batch = ops.shape(mask_probs)[0]
    h, w = ops.shape(mask_probs)[2], ops.shape(mask_probs)[3]
    height, width = original_size
    if num_detections is None:
        count = ops.full((batch,), slots, "int32")
    else:
        count = ops.minimum(ops.cast(num_detections, "int32"), slots)
        inside = ops.arange(slots, dtype="int32")[None, :] < count[:, None]
        mask_probs = ops.where(inside[:, :, None, None], mask_probs, 0.0)
    flat = ops.reshape(mask_probs, (-1, h, w))
    k = min(chunk_size, slots)
    # Pieces of k detections, row by row; the last piece of a row starts
    # early enough to stay in the row (recomputing a few masks).
    per_row = (count + (k - 1)) // k
    ends = ops.cumsum(per_row)

    def piece(t):
        b = ops.sum(ops.cast(ends <= t, "int32"))
        c = t - (ops.take(ends, b) - ops.take(per_row, b))
        start = b * slots + ops.minimum(c * k, slots - k)
        # A gather, not `ops.slice`: TensorFlow's XLA slice needs a constant
        # start, which made `jit_compile=True` recompile for every new
        # detection count (and constant-fold the network on the image).
        probs = ops.take(flat, start + ops.arange(k, dtype="int32"), axis=0)
        return (start,) + _piece_to_original(
            probs, mask_stride, resized_size, original_size, mask_threshold
        )

    masks, boxes = _fill_pieces(
        ops.sum(per_row), piece, k, (batch * slots, height, width)
    )
    return (
        ops.reshape(masks, (-1, slots, height, width)),
        ops.reshape(boxes, (-1, slots, 4)),
    )


def _piece_to_original(probs, mask_stride, resized_size, original_size, threshold):
    """`(k, h, w)` probabilities -> `(k, H, W)` bool masks at the original
    size and their `(k, 4)` boxes.

    The maps are the channels of one image, as in the all-at-once formula:
    TensorFlow's resize is fastest that way, and it computes every channel
    alone, so the values do not depend on how many there are.
    """
    h, w = ops.shape(probs)[1], ops.shape(probs)[2]
    x = ops.expand_dims(ops.transpose(probs, (1, 2, 0)), 0)
    x = resize(x, (h * mask_stride, w * mask_stride), "bilinear")
    x = x[:, : resized_size[0], : resized_size[1], :]
    x = resize(x, original_size, "bilinear")
    masks = x[0] > threshold  # (H, W, k)
    # Columns: a count over the rows as a matmul, much faster than a
    # reduction across rows, and exact (> 0 exactly where a pixel is set).
    ones = ops.ones((ops.shape(masks)[0],), "float32")
    cols = ops.einsum("h,hwk->kw", ones, ops.cast(masks, "float32")) > 0
    rows = ops.transpose(ops.any(masks, axis=1))
    return ops.transpose(masks, (2, 0, 1)), _occupancy_boxes(rows, cols)


def _occupancy_boxes(rows, cols):
    """Boxes from bool row `(..., H)` and column `(..., W)` occupancy.

    The first and last occupied index as a max over the last axis, in float
    arithmetic (exact; no argmax, flip or int32 broadcast, which LiteRT's
    GPU accelerator compiles to an invalid WebGPU shader).
    """
    y1, y2, nonempty = _first_and_last(rows)
    x1, x2, _ = _first_and_last(cols)
    return ops.stack([x1, y1, x2, y2], axis=-1) * nonempty[..., None]


def _first_and_last(occupied):
    """`(first, last + 1, any)` of the set entries along the last axis."""
    occupied = ops.cast(occupied, "float32")
    length = occupied.shape[-1] or ops.shape(occupied)[-1]
    index = ops.cast(ops.arange(1, length + 1, dtype="int32"), "float32")
    last = ops.max(occupied * index, axis=-1)
    first = ops.max(occupied * (ops.cast(length + 1, "float32") - index), axis=-1)
    return ops.cast(length, "float32") - first, last, ops.cast(last > 0, "float32")


def _fill_pieces(num_pieces, piece, k, masks_shape):
    """Zero `masks_shape` bool and `(slots, 4)` float buffers with the rows
    `start .. start + k` of each `piece(t)`, `t < num_pieces`, written in.

    The buffers are as large as the output, so they must be updated in place.
    XLA (JAX, `jit_compile=True`) does that for `slice_update` in a loop.
    TensorFlow without XLA copies the whole tensor on every
    `slice_update` / `scatter_update`, so there the rows go in with
    `InplaceUpdate` into a fresh `Empty` tensor (TensorFlow's in-place pair;
    `Empty` is stateful, so it is never constant-folded or shared). There
    `PASTE_PIECES_IN_FLIGHT` pieces are resized at the same time
    (`parallel_iterations`): TensorFlow's bilinear resize uses one core, and
    the loop keeps at most that many pieces' scratch memory alive.
    """
    slots = masks_shape[0]
    if _tensorflow_without_xla():
        import tensorflow as tf

        def empty(shape, dtype):
            return tf.raw_ops.Empty(
                shape=tf.stack([tf.cast(d, tf.int32) for d in shape]),
                dtype=dtype,
                init=True,
            )

        def body(t, masks, boxes):
            start, piece_masks, piece_boxes = piece(t)
            rows = start + tf.range(k)
            masks = tf.raw_ops.InplaceUpdate(x=masks, i=rows, v=piece_masks)
            boxes = tf.raw_ops.InplaceUpdate(x=boxes, i=rows, v=piece_boxes)
            return t + 1, masks, boxes

        _, masks, boxes = tf.while_loop(
            lambda t, *_: t < num_pieces,
            body,
            (
                tf.constant(0, tf.int32),
                empty(masks_shape, tf.bool),
                empty((slots, 4), tf.float32),
            ),
            parallel_iterations=PASTE_PIECES_IN_FLIGHT,
        )
        return masks, boxes

    def body(t, buffers):
        masks, boxes = buffers
        start, piece_masks, piece_boxes = piece(t)
        return (
            ops.slice_update(masks, (start, 0, 0), piece_masks),
            ops.slice_update(boxes, (start, 0), piece_boxes),
        )

    initial = (ops.zeros(masks_shape, "bool"), ops.zeros((slots, 4), "float32"))
    return ops.fori_loop(0, num_pieces, body, initial)


def _is_jax_tracer(x):
    import jax

    return isinstance(x, jax.core.Tracer)


@functools.cache
def _jitted_paste():
    import jax

    return jax.jit(_paste_pieces, static_argnums=(1, 2, 3, 4, 6))


def _graph_paste(mask_probs, resized_size, original_size, *args):
    """`_paste_pieces` as a TensorFlow graph, traced once per `D`, dtype and
    setting; the sizes are tensors, so a new photo size reuses the trace."""
    import tensorflow as tf

    threshold, stride, num_detections, chunk_size = args
    mask_probs = tf.convert_to_tensor(mask_probs)
    function = _traced_paste(
        mask_probs.shape[1],
        mask_probs.dtype.name,
        num_detections is not None,
        threshold,
        stride,
        chunk_size,
    )
    sizes = [
        tf.constant([int(v) for v in size], tf.int32)
        for size in (resized_size, original_size)
    ]
    extra = [] if num_detections is None else [tf.cast(num_detections, tf.int32)]
    return function(mask_probs, *sizes, *extra)


@functools.cache
def _traced_paste(slots, dtype, counted, threshold, stride, chunk_size):
    import tensorflow as tf

    signature = [
        tf.TensorSpec((None, slots, None, None), tf.as_dtype(dtype)),
        tf.TensorSpec((2,), tf.int32),
        tf.TensorSpec((2,), tf.int32),
    ]
    if counted:
        signature.append(tf.TensorSpec((None,), tf.int32))

    def paste(mask_probs, resized, original, num_detections=None):
        return _paste_pieces(
            mask_probs,
            (resized[0], resized[1]),
            (original[0], original[1]),
            threshold,
            stride,
            num_detections,
            chunk_size,
        )

    return tf.function(paste, input_signature=signature)


def _tensorflow_without_xla():
    """True on the TensorFlow backend, eagerly or in a graph not compiled by XLA."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    graph = tf.compat.v1.get_default_graph()
    return not control_flow_util.GraphOrParentsInXlaContext(graph)


def feature_boxes(masks, mask_stride, resized_size, original_size):
    """Boxes of feature-resolution masks in original-image pixels."""
    masks = ops.cast(masks, "float32")
    rows, cols = ops.max(masks, axis=-1), ops.max(masks, axis=-2)
    boxes = _occupancy_boxes(rows, cols) * float(mask_stride)
    resized = [ops.cast(v, "float32") for v in resized_size]
    original = [ops.cast(v, "float32") for v in original_size]
    limit = ops.stack([resized[1], resized[0], resized[1], resized[0]])
    scale = ops.stack([original[1] / resized[1], original[0] / resized[0]] * 2)
    return ops.minimum(boxes, limit) * scale
