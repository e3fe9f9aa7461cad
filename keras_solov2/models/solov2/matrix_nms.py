import keras
import numpy as np
from keras import ops

_KERNELS = ("gaussian", "linear")


def _batch_gather(x, indices):
    """Gathers `x[b, indices[b, k], ...]` into a `(B, K, ...)` tensor.

    Written as a flat `take` on `(B * N, ...)` so that it lowers to a single
    GATHER (TFLite builtin) instead of a broadcast `take_along_axis`.
    """
    num = x.shape[1]
    # Static trailing dims stay Python ints; dynamic ones (a mask size in a
    # retraced TF predict function) come from the runtime shape.
    trailing = tuple(
        d if d is not None else ops.shape(x)[i + 2] for i, d in enumerate(x.shape[2:])
    )
    k = indices.shape[1]
    batch = ops.shape(indices)[0]
    offsets = ops.arange(batch, dtype="int32") * num
    flat_indices = ops.reshape(indices + offsets[:, None], (-1,))
    flat_x = ops.reshape(x, (-1,) + trailing)
    return ops.reshape(ops.take(flat_x, flat_indices, axis=0), (-1, k) + trailing)


# Areas and intersections are counted in units of 256 pixels: exact in
# float32 (a power of two), and within float16's range (65504) on a GPU for
# masks of up to 16 M pixels.
_AREA_SCALE = 2.0**-8


def matrix_nms(
    masks,
    mask_area,
    labels,
    scores,
    num_candidates,
    max_detections,
    kernel="gaussian",
    sigma=2.0,
    filter_threshold=0.05,
    class_aware=True,
):
    """Matrix NMS on `(batch, num, pixels)` binary masks, with static shapes.

    The computation of `MatrixNMS` (see there), written for LiteRT's GPU
    accelerator as well as for the CPU: only float32 and int32 tensors of
    rank <= 4, 1-D gathers, `TOPK_V2` with a constant `k`, reductions over
    the last axis (IoU is symmetric, so mmdetection's column max over the
    upper triangle is a row max over the lower one), broadcasting in
    arithmetic only, and areas and intersections counted in units of 256
    pixels (float16 holds them on a GPU).

    Args:
        masks: float `(batch, num, pixels)` binary masks (0 or 1).
        mask_area: float `(batch, num)` their areas.
        labels: int32 `(batch, num)`, `-1` for padding.
        scores: float `(batch, num)`, `>= 0` where the label is not `-1`.
        num_candidates: int. The best candidates that enter the NMS.
        max_detections: int. Output slots.
        kernel, sigma, filter_threshold, class_aware: as `MatrixNMS`.

    Returns:
        The dict of `MatrixNMS.call`.
    """
    num = scores.shape[1]
    k = min(num_candidates, num)
    valid = ops.cast(labels >= 0, "float32")
    # 1. Sort by score, padding last, and keep the `k` best (stable: the
    # lower index first among equal scores, as mmdetection's sort).
    top_key, order = top_k(scores * valid - (1.0 - valid), k)
    valid = ops.cast(top_key >= 0, "float32")
    scores = top_key * valid
    labels = _batch_gather(labels, order)
    area = _batch_gather(mask_area, order) * _AREA_SCALE
    masks = _batch_gather(masks, order)

    # 2. IoU of each mask with every other, between pairs that may suppress
    # each other: decay_iou[b, j, i] for mask i ranked above mask j.
    inter = ops.matmul(masks * _AREA_SCALE, ops.transpose(masks, (0, 2, 1)))
    union = area[:, :, None] + area[:, None, :] - inter
    iou = inter / ops.maximum(union, _AREA_SCALE)
    pairs = valid[:, :, None] * valid[:, None, :]
    if class_aware:
        same = ops.cast(labels, "float32")
        same = ops.cast(same[:, :, None] - same[:, None, :] == 0, "float32")
        pairs = pairs * same
    above = np.tril(np.ones((k, k), "float32"), -1)[None]
    decay_iou = iou * pairs * above

    # 3. Compensation: the largest IoU of each mask with a higher one.
    compensate = ops.max(decay_iou, axis=-1)[:, None, :]

    # 4. Decay of mask j: the smallest ratio over the masks i above it.
    if kernel == "gaussian":
        ratio = ops.exp(-sigma * (ops.square(decay_iou) - ops.square(compensate)))
    else:
        ratio = (1.0 - decay_iou) / ops.maximum(1.0 - compensate, 1e-12)
    decayed = scores * ops.min(ratio, axis=-1)

    # 5. Filter, sort again and keep `max_detections` (the rest rank at -1).
    keep = valid
    if filter_threshold > 0:
        keep = keep * ops.cast(decayed >= filter_threshold, "float32")
    top_scores, position = top_k(decayed * keep - (1.0 - keep), min(k, max_detections))
    kept = ops.cast(top_scores >= 0, "int32")
    out = {
        "scores": top_scores * ops.cast(kept, "float32"),
        "labels": (_batch_gather(labels, position) + 1) * kept - 1,
        "indices": (_batch_gather(order, position) + 1) * kept - 1,
        "num_detections": ops.sum(kept, axis=1),
    }
    for key, value in (("scores", 0.0), ("labels", -1), ("indices", -1)):
        out[key] = _pad_axis1(out[key], max_detections, value)
    return out


def output_bound(nms, filter_threshold):
    """The lowest score that a left-out candidate must reach to matter.

    A detection is kept if its score reaches the lowest kept score when all
    slots are full, or `filter_threshold` when some are empty; a candidate
    can only lower the scores of candidates ranked below it. So a candidate
    left out of the computation whose score (or an upper bound of it) is
    below this value cannot have changed the output.
    """
    scores, count = nms["scores"], nms["num_detections"]
    full = ops.cast(count >= scores.shape[1], "float32")
    return full * ops.min(scores, axis=-1) + (1.0 - full) * filter_threshold


def count_reaching(values, bound, beyond):
    """`max(#{values >= bound} - beyond, 0)` per batch row (int32)."""
    reaching = ops.cast(values - bound[:, None] >= 0, "int32")
    return ops.maximum(ops.sum(reaching, axis=-1) - beyond, 0)


def top_k(x, k):
    """`ops.top_k` over the last axis of `(batch, n)` values `>= -1`.

    LiteRT's GPU accelerator reads the values four at a time and needs `n`
    to be a multiple of 4 (with other lengths it logs "TopK requires src
    tensor C dimension to be divisible by 4" and ranks whatever lies past
    the end). So the values are padded with -2, below every real entry.
    """
    extra = -x.shape[-1] % 4
    if extra:
        x = ops.concatenate([x, x[:, :extra] * 0.0 - 2.0], axis=-1)
    values, indices = ops.top_k(x, k)
    return values, ops.cast(indices, "int32")


def _pad_axis1(x, size, value):
    """Pads axis 1 of `x` at the end up to the static length `size`.

    As a concatenation with a tiled block of `value`, not `PAD`: LiteRT's
    GPU accelerator refuses a 2-D `PAD` and the `PADV2` of a constant, which
    the output slots need when `max_detections` exceeds the candidates into
    Matrix NMS (`pre_nms_top_k` 64, say).
    """
    extra = size - x.shape[1]
    if extra <= 0:
        return x
    if x.shape[1] == 0:  # an empty input: nothing to build the block from
        paddings = [(0, 0)] * len(x.shape)
        paddings[1] = (0, extra)
        return ops.pad(x, paddings, constant_values=value)
    block = x[:, :1] * 0 + ops.cast(value, x.dtype)
    block = ops.tile(block, [1, extra] + [1] * (len(x.shape) - 2))
    return ops.concatenate([x, block], axis=1)


@keras.saving.register_keras_serializable(package="keras_solov2")
class MatrixNMS(keras.layers.Layer):
    """Matrix NMS for instance masks, with static output shapes.

    Parallel soft-NMS of SOLOv2: every mask's score is decayed by its IoU with
    the higher-scored masks, compensated by how much those masks were
    themselves suppressed, all in one matrix computation. This reproduces
    mmdetection's `mask_matrix_nms` (`mmdet/models/layers/matrix_nms.py`):

    1. sort the candidates by descending score and keep the first
       `pre_nms_top_k`;
    2. `iou[i, j] = inter / (area_i + area_j - inter)` from the binary masks,
       kept for `i < j` (upper triangle) and, if `class_aware`, for pairs with
       the same label;
    3. `compensate[i] = max_k iou[k, i]`;
    4. `decay[j] = min_i f(iou[i, j]) / f(compensate[i])` with
       `f(x) = exp(-sigma * x**2)` ("gaussian") or `f(x) = 1 - x` ("linear");
    5. `score *= decay`, keep `score >= filter_threshold`, sort again and keep
       the first `max_detections`.

    Entries whose label is negative (`-1`) are padding: they are never kept
    and never suppress anything. Everything is computed with `keras.ops` on
    static shapes (no data-dependent shapes, no Python loop over masks), so
    the layer runs eagerly, under XLA / `jax.jit`, and converts to TFLite with
    builtin ops only.

    Differences from mmdet, only in degenerate cases: a pair of empty masks
    has IoU 0 instead of NaN (0 / 0), the gaussian ratio is computed as
    `exp(-sigma * (iou**2 - compensate**2))` (no 0 / 0 when `sigma` is huge),
    and with the linear kernel a mask whose compensation IoU is exactly 1
    divides by a tiny positive number instead of 0 (0 / 0 becomes a decay of
    0 instead of NaN).

    Args:
        kernel: str. The decay function, `"gaussian"` or `"linear"`.
            Defaults to `"gaussian"`.
        sigma: float. Gaussian decay factor, used as `exp(-sigma * iou**2)`
            (mmdet's convention; the paper's `sigma=0.5` is `2.0` here).
            Defaults to `2.0`.
        filter_threshold: float. After the decay, only scores
            `>= filter_threshold` are kept. A value `<= 0` disables the
            filter. Defaults to `0.05`.
        pre_nms_top_k: int. Number of highest-scored candidates that enter
            the NMS. A value `<= 0` keeps all of them. Defaults to `500`.
        max_detections: int. Number of detections returned per image (the
            static length of every output). A value `<= 0` returns one slot
            per NMS candidate. Defaults to `100`.
        class_aware: bool. If `True`, only masks with the same label suppress
            each other (mmdet). If `False`, labels are ignored, as in the
            paper's pseudo-code. Defaults to `True`.
        **kwargs: Base layer keyword arguments. The layer computes in
            `"float32"` unless another `dtype` is given.

    Call arguments:
        masks: Binary masks, `(batch, num, height, width)` or
            `(batch, num, pixels)`, bool, int or float. `num` must be static.
        labels: int tensor `(batch, num)`. Class index of each mask; `-1`
            marks padding / invalid entries.
        scores: float tensor `(batch, num)`. Score of each mask.
        mask_area: optional float tensor `(batch, num)`. Area of each mask;
            defaults to the sum of the mask.

    Returns:
        A dict of tensors with static shapes, sorted by descending decayed
        score:
        - `"scores"`: float32 `(batch, max_detections)`, `0` for padding.
        - `"labels"`: int32 `(batch, max_detections)`, `-1` for padding.
        - `"indices"`: int32 `(batch, max_detections)`, index of the kept
          entry in the input `num` axis, `-1` for padding.
        - `"num_detections"`: int32 `(batch,)`.

    Example:
    >>> masks = np.random.rand(2, 50, 32, 32) > 0.5
    >>> labels = np.random.randint(0, 3, size=(2, 50))
    >>> scores = np.random.rand(2, 50).astype("float32")
    >>> nms = keras_solov2.layers.MatrixNMS(max_detections=10)
    >>> out = nms(masks, labels, scores)
    >>> out["scores"].shape
    (2, 10)

    Reference:
        Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation",
        NeurIPS 2020, arXiv 2003.10152 (Matrix NMS: Sec. 2.2 and Appendix A).
    """

    def __init__(
        self,
        kernel="gaussian",
        sigma=2.0,
        filter_threshold=0.05,
        pre_nms_top_k=500,
        max_detections=100,
        class_aware=True,
        **kwargs,
    ):
        if kernel not in _KERNELS:
            raise ValueError(
                f"`kernel` must be one of {_KERNELS}. Received: kernel={kernel!r}"
            )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.kernel = kernel
        self.sigma = float(sigma)
        self.filter_threshold = float(filter_threshold)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.max_detections = int(max_detections)
        self.class_aware = bool(class_aware)

    def _num_candidates(self, num):
        if self.pre_nms_top_k > 0:
            return min(num, self.pre_nms_top_k)
        return num

    def _num_outputs(self, num):
        if self.max_detections > 0:
            return self.max_detections
        return max(self._num_candidates(num), 1)

    def call(self, masks, labels, scores, mask_area=None):
        masks = ops.convert_to_tensor(masks)
        num = masks.shape[1]
        if num is None:
            raise ValueError(
                "MatrixNMS needs a static number of masks (axis 1). "
                f"Received: masks.shape={masks.shape}"
            )
        if len(masks.shape) not in (3, 4):
            raise ValueError(
                "`masks` must be (batch, num, height, width) or "
                f"(batch, num, pixels). Received: masks.shape={masks.shape}"
            )
        pixels = int(np.prod(masks.shape[2:])) if None not in masks.shape[2:] else -1
        batch = ops.shape(masks)[0]
        masks = ops.cast(ops.reshape(masks, (batch, num, pixels)), "float32")
        labels = ops.cast(labels, "int32")
        scores = ops.cast(scores, "float32")
        if mask_area is None:
            mask_area = ops.sum(masks, axis=-1)
        mask_area = ops.cast(mask_area, "float32")
        if num == 0:
            # One padding entry keeps every shape non-empty.
            masks = _pad_axis1(masks, 1, 0.0)
            labels = _pad_axis1(labels, 1, -1)
            scores = _pad_axis1(scores, 1, 0.0)
            mask_area = _pad_axis1(mask_area, 1, 0.0)
            num = 1
        # Padding (label -1) may hold anything, NaN included: zero it.
        valid = labels >= 0
        masks = ops.where(valid[:, :, None], masks, 0.0)
        scores = ops.where(valid, scores, 0.0)
        mask_area = ops.where(valid, mask_area, 0.0)
        return matrix_nms(
            masks,
            mask_area,
            labels,
            scores,
            num_candidates=self._num_candidates(num),
            max_detections=self._num_outputs(num),
            kernel=self.kernel,
            sigma=self.sigma,
            filter_threshold=self.filter_threshold,
            class_aware=self.class_aware,
        )

    def compute_output_spec(self, masks, labels, scores, mask_area=None):
        batch = masks.shape[0]
        num_out = self._num_outputs(masks.shape[1])
        return {
            "scores": keras.KerasTensor((batch, num_out), dtype="float32"),
            "labels": keras.KerasTensor((batch, num_out), dtype="int32"),
            "indices": keras.KerasTensor((batch, num_out), dtype="int32"),
            "num_detections": keras.KerasTensor((batch,), dtype="int32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel": self.kernel,
                "sigma": self.sigma,
                "filter_threshold": self.filter_threshold,
                "pre_nms_top_k": self.pre_nms_top_k,
                "max_detections": self.max_detections,
                "class_aware": self.class_aware,
            }
        )
        return config
