"""SOLOv2's inference decoding: `SOLOv2Decoder`, `paste_masks`, `masks_to_boxes`."""

import functools
import math

import keras
import numpy as np
from keras import ops

from keras_solov2.layers.live_settings import LiveSettings
from keras_solov2.layers.spatial import resize
from keras_solov2.models.solov2.matrix_nms import (
    MatrixNMS,
    _batch_gather,
    count_reaching,
    matrix_nms,
    output_bound,
    top_k,
)
from keras_solov2.models.solov2.point_nms import point_nms

MASK_RESOLUTIONS = ("original", "features")
NMS_KERNELS = ("gaussian", "linear")
# Detections resized to the original size at a time. Each needs about
# 4 * H * W bytes of scratch memory (50 MB for a 12 MP photo).
PASTE_CHUNK_SIZE = 4

# Decoder setting -> the MatrixNMS attribute that it sets.
_NMS_SETTINGS = {
    "nms_kernel": "kernel",
    "nms_sigma": "sigma",
    "filter_threshold": "filter_threshold",
    "pre_nms_top_k": "pre_nms_top_k",
    "max_detections": "max_detections",
}


@keras.saving.register_keras_serializable(package="keras_solov2")
class SOLOv2Decoder(LiveSettings, keras.layers.Layer):
    """Turns SOLOv2's dense outputs into instance masks, with static shapes.

    Steps (mmdetection's `SOLOV2Head._predict_by_feat_single`):
    point NMS on the sigmoid category scores; every (cell, class) pair with
    score `> score_threshold` is a candidate; its mask is
    `sigmoid(kernel . mask_features)` at `1 / mask_stride` of the padded
    input, binarised at `mask_threshold`; candidates whose mask area is not
    `> stride` of their level are dropped; scores are multiplied by the
    maskness (mean probability inside the mask); Matrix NMS keeps the best
    `pre_nms_top_k`, decays the scores, keeps those `>= filter_threshold`
    and returns the top `max_detections`.

    Two caps keep the shapes static and the cost small. Masks are computed
    only for the `max_candidates` highest category scores, and Matrix NMS
    (whose cost grows with the square of its input) sees the best
    `pre_nms_top_k` of them. A candidate left out by a cap cannot score
    more than its category score (the maskness is at most 1 and Matrix NMS
    only lowers scores), and it can only suppress lower-ranked ones; so it
    could have changed the output only if that bound reaches the lowest
    kept score (all `max_detections` slots full) or `filter_threshold`.
    `candidates_overflow` counts those per image: `0` means the output is
    exactly that of decoding every candidate (mmdetection's result, whose
    `nms_pre` is 500). Trained models on ordinary photos have far fewer
    candidates than the caps; random weights crowd their scores and
    overflow. Raising the caps costs `max_candidates * E * h * w` and
    `pre_nms_top_k**2 * h * w` multiply-adds; see docs/inference.md.

    With `mask_resolution="original"` (the default, as mmdetection and
    detectron2), the kept probability maps are then upsampled x`mask_stride`
    to the padded input, cropped to the resized image, resized to the
    original image and thresholded at `mask_threshold` (`paste_masks`). Only
    the kept detections are resized, `PASTE_CHUNK_SIZE` at a time, so the
    memory needed beyond the output masks does not grow with the image.
    With `mask_resolution="features"`, the decoder stops before that step and
    returns the probability maps at `1 / mask_stride` of the padded input
    (what an exported model returns); `keras_solov2.layers.paste_masks`
    turns them into exactly the default masks.

    Settings (`SOLOv2Decoder.SETTINGS`: every argument but `num_grids` and
    `mask_stride`, which the backbone fixes) are
    validated in the constructor and whenever they are set later, and read
    at call time. `keras_solov2.SOLOv2` forwards them
    (`model.score_threshold = 0.3`) and retraces its predict function when
    one changed.

    Args:
        num_grids: tuple of ints. Grid size per level.
        strides: tuple of ints, one per level. A candidate of a level is kept
            only if its binary mask has more than `stride` pixels (at the
            mask resolution). Defaults to `(8, 8, 16, 32, 32)`.
        score_threshold: float in `[0, 1]`. Defaults to `0.1`.
        mask_threshold: float in `[0, 1]`. Defaults to `0.5`.
        max_candidates: int >= 1. Candidates whose masks are computed, the
            highest category scores first. Defaults to `384`.
        pre_nms_top_k: int >= 1. Candidates into Matrix NMS, the highest
            scores (after the maskness) first. Defaults to `192`.
        max_detections: int >= 1. Detection slots per image. Defaults to
            `100`.
        nms_kernel: str. `"gaussian"` or `"linear"`. Defaults to `"gaussian"`.
        nms_sigma: float > 0. Gaussian decay factor (mmdetection's
            convention). Defaults to `2.0`.
        filter_threshold: float in `[0, 1]`. Matrix NMS keeps decayed scores
            `>= filter_threshold` (`0` keeps all). Defaults to `0.05`.
        mask_stride: int >= 1. Stride of the mask features. Defaults to `4`.
        mask_resolution: str. `"original"` (masks at the original image size)
            or `"features"` (mask probabilities at `1 / mask_stride` of the
            padded input). Defaults to `"original"`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        category_logits: `(batch, cells, C)` logits.
        kernels: `(batch, cells, E)` dynamic kernels.
        mask_features: `(batch, h, w, E)` mask features.
        resized_size: `(height, width)` of the resized, unpadded image inside
            the padded input (Python ints or scalar tensors).
        original_size: `(height, width)` of the original image.

    Returns:
        A dict (`D = max_detections`, slots sorted by descending score,
        padding last) with:
        - `"labels"`: int32 `(batch, D)`, `-1` for padding;
        - `"scores"`: float32 `(batch, D)`, `0` for padding;
        - `"num_detections"`: int32 `(batch,)`;
        - `"candidates_overflow"`: int32 `(batch,)`, the candidates left out
          by a cap that could have changed the result (`0`: exact);
        - with `mask_resolution="original"`: `"masks"` bool
          `(batch, D, H, W)` at the original size (empty for padding) and
          `"boxes"` float32 `(batch, D, 4)`, the tight `[x1, y1, x2, y2]`
          pixel-edge boxes of those masks (zeros for empty masks);
        - with `mask_resolution="features"`: `"mask_probs"` float32
          `(batch, D, h, w)` (zeros for padding) and `"boxes"`, the boxes of
          `mask_probs > mask_threshold` scaled to original-image pixels:
          approximate, within about `mask_stride` input pixels (times the
          resize factor) of the exact ones, which are
          `masks_to_boxes(paste_masks(...))`.

    Example:
    >>> decoder = keras_solov2.layers.SOLOv2Decoder(
    ...     num_grids=(40, 36, 24, 16, 12), max_detections=20)
    >>> decoder.score_threshold = 0.3   # validated, used by the next call
    >>> decoder.mask_resolution = "features"

    Reference: SOLOv2 §2.1.4 and §2.2, arXiv 2003.10152.
    """

    SETTINGS = (
        "strides",
        "score_threshold",
        "mask_threshold",
        "max_candidates",
        "pre_nms_top_k",
        "max_detections",
        "nms_kernel",
        "nms_sigma",
        "filter_threshold",
        "mask_resolution",
    )

    def __init__(
        self,
        num_grids,
        strides=(8, 8, 16, 32, 32),
        score_threshold=0.1,
        mask_threshold=0.5,
        max_candidates=384,
        pre_nms_top_k=192,
        max_detections=100,
        nms_kernel="gaussian",
        nms_sigma=2.0,
        filter_threshold=0.05,
        mask_stride=4,
        mask_resolution="original",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_grids = _positive_ints("num_grids", num_grids)
        # Its settings are the decoder's, forwarded by `__setattr__`.
        self.matrix_nms = MatrixNMS(name="matrix_nms")
        self.strides = strides
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.max_candidates = max_candidates
        self.pre_nms_top_k = pre_nms_top_k
        self.max_detections = max_detections
        self.nms_kernel = nms_kernel
        self.nms_sigma = nms_sigma
        self.filter_threshold = filter_threshold
        # The backbone's mask-feature stride: architecture, not a setting.
        self.mask_stride = _positive_int("mask_stride", mask_stride)
        self.mask_resolution = mask_resolution
        # No weights: built at construction, so that loading a saved model
        # and JAX's stateless predict need no eager call to build it.
        self.matrix_nms.built = True
        self.built = True

    def __setattr__(self, name, value):
        super().__setattr__(name, value)  # validates the settings
        if name in _NMS_SETTINGS:
            setattr(self.matrix_nms, _NMS_SETTINGS[name], getattr(self, name))

    def validate_setting(self, name, value):
        if name == "strides":
            value = _positive_ints(name, value)
            if len(value) != len(self.num_grids):
                raise ValueError(
                    f"`strides` needs one value per level: got {len(value)} "
                    f"({value}) for num_grids {self.num_grids}."
                )
            return value
        if name in ("score_threshold", "mask_threshold", "filter_threshold"):
            return _number(name, value, 0.0, 1.0)
        if name == "nms_sigma":
            return _number(name, value, 0.0, math.inf, include_low=False)
        if name == "nms_kernel":
            return _choice(name, value, NMS_KERNELS)
        if name == "mask_resolution":
            return _choice(name, value, MASK_RESOLUTIONS)
        return _positive_int(name, value)

    def build(self, *args, **kwargs):
        # Nothing to create: neither the decoder nor its MatrixNMS has weights.
        self.matrix_nms.built = True
        self.built = True

    def call(
        self, category_logits, kernels, mask_features, resized_size, original_size
    ):
        num_classes = category_logits.shape[-1]
        num_cells = category_logits.shape[1]
        if num_cells != sum(s * s for s in self.num_grids):
            raise ValueError(
                f"category_logits has {num_cells} cells, but num_grids "
                f"{self.num_grids} make {sum(s * s for s in self.num_grids)}."
            )
        batch = ops.shape(category_logits)[0]
        h, w = ops.shape(mask_features)[1], ops.shape(mask_features)[2]
        scores = point_nms(
            ops.sigmoid(ops.cast(category_logits, "float32")), self.num_grids
        )
        # Static (cells * classes): the batch may be dynamic under tf.function.
        flat = ops.reshape(scores, (-1, num_cells * num_classes))
        k = min(self.max_candidates, flat.shape[1])
        top_scores, top_index = top_k(flat, k)
        valid = ops.cast(top_scores > self.score_threshold, "float32")
        cells = top_index // num_classes
        labels = top_index - cells * num_classes
        cand_kernels = _batch_gather(ops.cast(kernels, "float32"), cells)
        features = ops.reshape(
            ops.cast(mask_features, "float32"), (batch, -1, ops.shape(mask_features)[3])
        )
        probs = ops.sigmoid(
            ops.matmul(cand_kernels, ops.transpose(features, (0, 2, 1)))
        )  # (batch, k, h * w)
        binary = ops.cast(probs > self.mask_threshold, "float32")
        area = _mask_sum(binary, h, w)
        valid = valid * ops.cast(
            area > _cell_strides(cells, self.num_grids, self.strides), "float32"
        )
        maskness = _mask_sum(probs * binary, h, w) / ops.maximum(area, 1.0)
        scores = top_scores * maskness * valid
        labels = (labels + 1) * ops.cast(valid, "int32") - 1
        nms = matrix_nms(
            binary,
            area,
            labels,
            scores,
            num_candidates=self.pre_nms_top_k,
            max_detections=self.max_detections,
            kernel=self.nms_kernel,
            sigma=self.nms_sigma,
            filter_threshold=self.filter_threshold,
        )
        keep = nms["indices"]
        kept = ops.cast(keep >= 0, "float32")
        kept_probs = _batch_gather(probs, ops.maximum(keep, 0)) * kept[:, :, None]
        kept_probs = ops.reshape(kept_probs, (-1, keep.shape[1], h, w))
        # Candidates that a cap left out and that could have changed the
        # output (see `output_bound`): not decoded (their category score
        # bounds their score), or decoded but beyond `pre_nms_top_k`.
        bound = output_bound(nms, self.filter_threshold)
        candidates = ops.cast(flat > self.score_threshold, "float32")
        overflow = count_reaching(flat * candidates - (1.0 - candidates), bound, k)
        overflow = overflow + count_reaching(
            scores * valid - (1.0 - valid), bound, min(self.pre_nms_top_k, k)
        )
        if self.mask_resolution == "features":
            results = {
                "mask_probs": kept_probs,
                "boxes": feature_boxes(
                    kept_probs > self.mask_threshold,
                    self.mask_stride,
                    resized_size,
                    original_size,
                ),
            }
        else:
            masks, boxes = _paste(
                kept_probs,
                resized_size,
                original_size,
                self.mask_threshold,
                self.mask_stride,
                nms["num_detections"],
                PASTE_CHUNK_SIZE,
            )
            results = {"masks": masks, "boxes": boxes}
        return {
            **results,
            "labels": nms["labels"],
            "scores": nms["scores"],
            "num_detections": nms["num_detections"],
            "candidates_overflow": overflow,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_grids": self.num_grids,
                "mask_stride": self.mask_stride,
                **self.settings(),
            }
        )
        return config


def features_decoder(decoder, name=None):
    """A copy of `decoder` that stops at feature-resolution masks
    (`mask_resolution="features"`), its other settings the same.

    What the JAX predict engine and the exports run: `paste_masks` turns its
    `"mask_probs"` into the masks that `decoder` itself returns.
    """
    config = decoder.get_config()
    config.update(mask_resolution="features", name=name or f"{decoder.name}_features")
    return SOLOv2Decoder.from_config(config)


def paste_masks(
    mask_probs,
    resized_size,
    original_size,
    mask_threshold=0.5,
    mask_stride=4,
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
    TensorFlow's graph and eager modes; called eagerly on JAX, it compiles
    itself with `jax.jit`). Scratch memory is then about
    `chunk_size * 4 * H * W` bytes beside the `batch * D * H * W` bytes of
    the masks. It runs eagerly, in a `tf.function` (also with dynamic
    sizes), under `jit_compile=True` and on JAX.

    Args:
        mask_probs: float `(batch, D, h, w)` mask probabilities at
            `1 / mask_stride` of the padded input; `D` must be static.
        resized_size: `(height, width)` of the resized, unpadded image inside
            the padded input, e.g.
            `model.image_converter.resized_size(H, W)`.
        original_size: `(height, width)` of the original image.
        mask_threshold: float. Defaults to `0.5`.
        mask_stride: int. Defaults to `4`.
        num_detections: optional int `(batch,)`. Slots from
            `num_detections[b]` on are returned empty (and not resized).
            Defaults to `None`: all `D` slots are resized.
        chunk_size: int >= 1. Detections resized at a time. Defaults to
            `PASTE_CHUNK_SIZE` (4).
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
        _number("mask_threshold", mask_threshold, 0.0, 1.0),
        _positive_int("mask_stride", mask_stride),
        num_detections,
        _positive_int("chunk_size", chunk_size),
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


# ------------------------------------------------------------- internals
def _mask_sum(x, h, w):
    """Sum over the `h * w` pixels of `(batch, k, h * w)`: rows, then columns.

    Two short sums instead of one long one: on a GPU computing in float16
    each partial sum stays exact (a row of 0/1 pixels up to 2048 wide) and
    none stalls where float16 stops counting in ones.
    """
    rows = ops.sum(ops.reshape(x, (-1, x.shape[1], h, w)), axis=-1)
    return ops.sum(rows, axis=-1)


def _cell_strides(cells, num_grids, strides):
    """The stride of each cell's level, from its index: arithmetic only."""
    # Compared as int32: float16 holds cell indices only up to 2048.
    stride = ops.cast(cells >= 0, "float32") * float(strides[0])
    start = 0
    for grid, previous, current in zip(num_grids, strides, strides[1:], strict=False):
        start += grid * grid
        if current != previous:
            step = ops.cast(cells >= start, "float32")
            stride = stride + step * float(current - previous)
    return stride


def _paste(mask_probs, resized_size, original_size, *args):
    """`(masks, boxes)` at the original size, piece by piece (see paste_masks)."""
    if keras.backend.backend() == "jax" and not _is_jax_tracer(mask_probs):
        # Eagerly, JAX would copy the whole output at every piece.
        resized_size = tuple(int(v) for v in resized_size)
        original_size = tuple(int(v) for v in original_size)
        return _jitted_paste()(mask_probs, resized_size, original_size, *args)
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
    `Empty` is stateful, so it is never constant-folded or shared), one
    piece at a time (`parallel_iterations=1` keeps at most one piece's
    scratch memory alive).
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
            parallel_iterations=1,
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


# ------------------------------------------------------------- validation
def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    return int(value)


def _positive_ints(name, value):
    try:
        values = tuple(value)
    except TypeError:
        values = None
    if not values or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
        for v in values
    ):
        raise ValueError(
            f"`{name}` must be a non-empty sequence of ints >= 1, got {value!r}."
        )
    return tuple(int(v) for v in values)


def _number(name, value, low, high, include_low=True):
    """`value` as a float in `[low, high]` (`(low, high]` if not `include_low`)."""
    numbers = (int, float, np.integer, np.floating)
    valid = isinstance(value, numbers) and not isinstance(value, bool)
    if valid:
        valid = (value >= low if include_low else value > low) and value <= high
    if not valid:
        if high == math.inf:
            bounds = f"{'>=' if include_low else '>'} {low:g}"
        else:
            bounds = f"in {'[' if include_low else '('}{low:g}, {high:g}]"
        raise ValueError(f"`{name}` must be a number {bounds}, got {value!r}.")
    return float(value)


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value
