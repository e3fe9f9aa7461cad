import keras
import numpy as np
from keras import ops

from keras_solov2.layers.matrix_nms import MatrixNMS
from keras_solov2.layers.point_nms import point_nms
from keras_solov2.layers.spatial import resize


@keras.saving.register_keras_serializable(package="keras_solov2")
class SOLOv2Decoder(keras.layers.Layer):
    """Turns SOLOv2's dense outputs into instance masks, with static shapes.

    Steps (mmdetection's `SOLOV2Head._predict_by_feat_single`):
    point NMS on the sigmoid category scores; every (cell, class) pair with
    score `> score_threshold` is a candidate (at most `max_candidates`, the
    highest-scored first; `candidates_overflow` counts the rest); its mask is
    `sigmoid(kernel . mask_features)` at 1/4 scale, binarised at
    `mask_threshold`; candidates whose mask area is not `> stride` of their
    level are dropped; scores are multiplied by the maskness (mean probability
    inside the mask); Matrix NMS keeps the best `pre_nms_top_k`, decays the
    scores, keeps those `>= filter_threshold` and returns the top
    `max_detections`. The kept probability maps are upsampled x4 to the
    padded input, cropped to the resized image, resized to the original
    image and thresholded at `mask_threshold`.

    Args:
        num_grids: tuple of ints. Grid size per level.
        strides: tuple of ints. Area threshold per level. Defaults to
            `(8, 8, 16, 32, 32)`.
        score_threshold: float. Defaults to `0.1`.
        mask_threshold: float. Defaults to `0.5`.
        max_candidates: int. Cap on candidates before NMS. Defaults to `1000`.
        pre_nms_top_k: int. Defaults to `500`.
        max_detections: int. Defaults to `100`.
        nms_kernel: str. `"gaussian"` or `"linear"`. Defaults to `"gaussian"`.
        nms_sigma: float. Defaults to `2.0`.
        filter_threshold: float. Defaults to `0.05`.
        mask_stride: int. Stride of the mask features. Defaults to `4`.
        **kwargs: Base layer keyword arguments.

    Returns (from `call`):
        dict with `masks` `(batch, max_detections, H, W)` bool at the original
        size, `labels` int32 (`-1` for padding), `scores` float32 (`0` for
        padding), `boxes` `(batch, max_detections, 4)` float32 `[x1, y1, x2,
        y2]` derived from the masks (pixel edges, zeros for padding),
        `num_detections` `(batch,)` int32 and `candidates_overflow`
        `(batch,)` int32.

    Reference: SOLOv2 §2.1.4 and §2.2, arXiv 2003.10152.
    """

    def __init__(
        self,
        num_grids,
        strides=(8, 8, 16, 32, 32),
        score_threshold=0.1,
        mask_threshold=0.5,
        max_candidates=1000,
        pre_nms_top_k=500,
        max_detections=100,
        nms_kernel="gaussian",
        nms_sigma=2.0,
        filter_threshold=0.05,
        mask_stride=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_grids = tuple(int(s) for s in num_grids)
        self.strides = tuple(int(s) for s in strides)
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.max_candidates = max_candidates
        self.pre_nms_top_k = pre_nms_top_k
        self.max_detections = max_detections
        self.nms_kernel = nms_kernel
        self.nms_sigma = nms_sigma
        self.filter_threshold = filter_threshold
        self.mask_stride = mask_stride
        self.matrix_nms = MatrixNMS(
            kernel=nms_kernel,
            sigma=nms_sigma,
            filter_threshold=filter_threshold,
            pre_nms_top_k=pre_nms_top_k,
            max_detections=max_detections,
            name="matrix_nms",
        )
        self._cell_strides = np.concatenate(
            [
                np.full(s * s, st, np.float32)
                for s, st in zip(self.num_grids, self.strides)
            ]
        )

    def call(
        self, category_logits, kernels, mask_features, resized_size, original_size
    ):
        """Decodes a batch.

        Args:
            category_logits: `(batch, cells, C)` logits.
            kernels: `(batch, cells, E)` dynamic kernels.
            mask_features: `(batch, h, w, E)` mask features.
            resized_size: `(height, width)` of the resized, unpadded image
                inside the padded input.
            original_size: `(height, width)` of the original image.
        """
        num_classes = category_logits.shape[-1]
        batch = ops.shape(category_logits)[0]
        h, w = ops.shape(mask_features)[1], ops.shape(mask_features)[2]
        scores = point_nms(
            ops.sigmoid(ops.cast(category_logits, "float32")), self.num_grids
        )
        # Static (cells * classes): the batch may be dynamic under tf.function.
        flat = ops.reshape(scores, (-1, category_logits.shape[1] * num_classes))
        k = min(self.max_candidates, flat.shape[1])
        top_scores, top_index = ops.top_k(flat, k=k, sorted=True)
        valid = top_scores > self.score_threshold
        overflow = ops.maximum(
            ops.sum(ops.cast(flat > self.score_threshold, "int32"), axis=1) - k, 0
        )
        cells = top_index // num_classes
        labels = top_index % num_classes
        cand_kernels = ops.take_along_axis(
            ops.cast(kernels, "float32"), ops.expand_dims(cells, -1), axis=1
        )
        features = ops.reshape(
            ops.cast(mask_features, "float32"), (batch, -1, ops.shape(mask_features)[3])
        )
        probs = ops.sigmoid(ops.einsum("bne,bpe->bnp", cand_kernels, features))
        binary = ops.cast(probs > self.mask_threshold, "float32")
        area = ops.sum(binary, axis=-1)
        stride = ops.take(ops.convert_to_tensor(self._cell_strides), cells)
        valid = ops.logical_and(valid, area > stride)
        maskness = ops.sum(probs * binary, axis=-1) / ops.maximum(area, 1.0)
        scores = ops.where(valid, top_scores * maskness, 0.0)
        labels = ops.where(valid, labels, -1)
        nms = self.matrix_nms(binary, labels, scores, mask_area=area)
        keep = nms["indices"]
        kept = keep >= 0
        kept_probs = ops.take_along_axis(
            probs, ops.expand_dims(ops.maximum(keep, 0), -1), axis=1
        )
        kept_probs = ops.where(ops.expand_dims(kept, -1), kept_probs, 0.0)
        masks = self._masks_to_original(kept_probs, h, w, resized_size, original_size)
        return {
            "masks": masks,
            "labels": nms["labels"],
            "scores": nms["scores"],
            "boxes": masks_to_boxes(masks),
            "num_detections": nms["num_detections"],
            "candidates_overflow": overflow,
        }

    def _masks_to_original(self, probs, h, w, resized_size, original_size):
        probs = ops.reshape(probs, (-1, self.max_detections, h, w))
        probs = ops.transpose(probs, (0, 2, 3, 1))
        probs = resize(probs, (h * self.mask_stride, w * self.mask_stride), "bilinear")
        probs = probs[:, : resized_size[0], : resized_size[1], :]
        probs = resize(probs, original_size, "bilinear")
        return ops.transpose(probs > self.mask_threshold, (0, 3, 1, 2))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_grids": self.num_grids,
                "strides": self.strides,
                "score_threshold": self.score_threshold,
                "mask_threshold": self.mask_threshold,
                "max_candidates": self.max_candidates,
                "pre_nms_top_k": self.pre_nms_top_k,
                "max_detections": self.max_detections,
                "nms_kernel": self.nms_kernel,
                "nms_sigma": self.nms_sigma,
                "filter_threshold": self.filter_threshold,
                "mask_stride": self.mask_stride,
            }
        )
        return config


def masks_to_boxes(masks):
    """Tight `[x1, y1, x2, y2]` boxes (pixel edges) of `(..., H, W)` masks.

    Empty masks give all-zero boxes.
    """
    masks = ops.cast(masks, "int32")
    height, width = ops.shape(masks)[-2], ops.shape(masks)[-1]
    rows = ops.max(masks, axis=-1)  # (..., H)
    cols = ops.max(masks, axis=-2)  # (..., W)
    nonempty = ops.max(rows, axis=-1) > 0
    y1 = ops.argmax(rows, axis=-1)
    y2 = height - ops.argmax(ops.flip(rows, axis=-1), axis=-1)
    x1 = ops.argmax(cols, axis=-1)
    x2 = width - ops.argmax(ops.flip(cols, axis=-1), axis=-1)
    boxes = ops.cast(ops.stack([x1, y1, x2, y2], axis=-1), "float32")
    return ops.where(ops.expand_dims(nonempty, -1), boxes, 0.0)
