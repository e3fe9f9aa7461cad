"""SOLOv2's inference decoding, `SOLOv2Decoder`, and `features_decoder`.

The paste to the photo's size is in `mask_paste` (`paste_masks`).
"""

import math

import keras
from keras import ops

from keras_solov2.layers.live_settings import (
    LiveSettings,
    choice,
    number,
    positive_int,
    positive_ints,
)
from keras_solov2.models.solov2.mask_paste import (
    feature_boxes,
    paste_masks,
)
from keras_solov2.models.solov2.matrix_nms import (
    MatrixNMS,
    _batch_gather,
    count_reaching,
    matrix_nms,
    output_bound,
    top_k,
)
from keras_solov2.models.solov2.point_nms import point_nms
from keras_solov2.utils import image_geometry

MASK_RESOLUTIONS = ("original", "features")
NMS_KERNELS = ("gaussian", "linear")

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
        mask_stride: int >= 1. Stride of the mask features, the backbone's
            `mask_stride` (`SOLOv2` passes `backbone.mask_stride`). Defaults
            to `4` (`keras_solov2.utils.image_geometry.MASK_STRIDE`).
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
        mask_stride=image_geometry.MASK_STRIDE,
        mask_resolution="original",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_grids = positive_ints("num_grids", num_grids)
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
        self.mask_stride = positive_int("mask_stride", mask_stride)
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
            value = positive_ints(name, value)
            if len(value) != len(self.num_grids):
                raise ValueError(
                    f"`strides` needs one value per level: got {len(value)} "
                    f"({value}) for num_grids {self.num_grids}."
                )
            return value
        if name in ("score_threshold", "mask_threshold", "filter_threshold"):
            return number(name, value, 0.0, 1.0)
        if name == "nms_sigma":
            return number(name, value, 0.0, math.inf, include_low=False)
        if name == "nms_kernel":
            return choice(name, value, NMS_KERNELS)
        if name == "mask_resolution":
            return choice(name, value, MASK_RESOLUTIONS)
        return positive_int(name, value)

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
            masks, boxes = paste_masks(
                kept_probs,
                resized_size,
                original_size,
                mask_threshold=self.mask_threshold,
                mask_stride=self.mask_stride,
                num_detections=nms["num_detections"],
                return_boxes=True,
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
