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


def _pad_axis1(x, size, value):
    """Pads axis 1 of `x` at the end up to the static length `size`."""
    extra = size - x.shape[1]
    if extra <= 0:
        return x
    paddings = [(0, 0)] * len(x.shape)
    paddings[1] = (0, extra)
    return ops.pad(x, paddings, constant_values=value)


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

        # 1. Sort (padding last) and keep the `pre_nms_top_k` best.
        k = self._num_candidates(num)
        valid = labels >= 0
        _, order = ops.top_k(ops.where(valid, scores, -np.inf), k)
        order = ops.cast(order, "int32")
        scores = _batch_gather(scores, order)
        labels = _batch_gather(labels, order)
        valid = _batch_gather(valid, order)
        mask_area = _batch_gather(mask_area, order)
        masks = _batch_gather(masks, order)

        # 2. Upper-triangular IoU between pairs that may suppress each other.
        inter = ops.matmul(masks, ops.transpose(masks, (0, 2, 1)))
        union = mask_area[:, :, None] + mask_area[:, None, :] - inter
        iou = inter / ops.where(union > 0, union, 1.0)
        # Padding sorts last, so the upper triangle never lets it suppress a
        # valid mask; masking its columns also keeps garbage (NaN) padding
        # masks out of the compensation term.
        pairs = np.triu(np.ones((k, k), dtype=bool), 1)[None]
        pairs = ops.logical_and(pairs, valid[:, None, :])
        if self.class_aware:
            same_label = ops.equal(labels[:, :, None], labels[:, None, :])
            pairs = ops.logical_and(pairs, same_label)
        decay_iou = ops.where(pairs, iou, 0.0)

        # 3. Compensation: row i holds the max IoU of mask i with any
        # higher-scored mask (the column max).
        compensate_iou = ops.max(decay_iou, axis=1)[:, :, None]

        # 4. Decay coefficient of column j: min over the rows i.
        if self.kernel == "gaussian":
            ratio = ops.exp(
                -self.sigma * (ops.square(decay_iou) - ops.square(compensate_iou))
            )
        else:
            ratio = (1.0 - decay_iou) / ops.maximum(1.0 - compensate_iou, 1e-12)
        scores = scores * ops.min(ratio, axis=1)

        # 5. Filter, sort again and keep `max_detections`.
        keep = valid
        if self.filter_threshold > 0:
            keep = ops.logical_and(keep, scores >= self.filter_threshold)
        num_out = self._num_outputs(num)
        top_scores, position = ops.top_k(
            ops.where(keep, scores, -np.inf), min(k, num_out)
        )
        position = ops.cast(position, "int32")
        kept = _batch_gather(keep, position)
        out = {
            "scores": ops.where(kept, top_scores, 0.0),
            "labels": ops.where(kept, _batch_gather(labels, position), -1),
            "indices": ops.where(kept, _batch_gather(order, position), -1),
        }
        out["scores"] = _pad_axis1(out["scores"], num_out, 0.0)
        out["labels"] = _pad_axis1(out["labels"], num_out, -1)
        out["indices"] = _pad_axis1(out["indices"], num_out, -1)
        out["num_detections"] = ops.sum(ops.cast(kept, "int32"), axis=1)
        return out

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
