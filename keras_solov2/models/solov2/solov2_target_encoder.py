import warnings

import keras
import numpy as np
from keras import ops

from keras_solov2.layers.live_settings import LiveSettings
from keras_solov2.utils import image_geometry


def centers_of_mass(masks):
    """`(center_y, center_x, area)` of `(B, M, H, W)` binary masks, in pixels.

    Integer sums, as mmdetection's `center_of_mass`; `area` is int32 and the
    centres of an empty mask are 0.
    """
    masks_i = ops.cast(masks, "int32")
    row_counts = ops.sum(masks_i, axis=3)  # (B, M, H)
    col_counts = ops.sum(masks_i, axis=2)  # (B, M, W)
    area = ops.sum(row_counts, axis=2)
    ys = ops.arange(ops.shape(row_counts)[2], dtype="int32")
    xs = ops.arange(ops.shape(col_counts)[2], dtype="int32")
    area_f = ops.maximum(ops.cast(area, "float32"), 1e-6)
    center_y = ops.cast(ops.sum(row_counts * ys, axis=2), "float32") / area_f
    center_x = ops.cast(ops.sum(col_counts * xs, axis=2), "float32") / area_f
    return center_y, center_x, area


def downsampled_masks(masks, size):
    """`(B, M, H, W)` binary masks at `size` `(h, w)`, float32 0/1.

    Bilinear without antialiasing, then a 0.5 threshold: what `mmcv.imrescale`
    does to a 0/1 uint8 mask.
    """
    masks_nhwc = ops.transpose(ops.cast(masks, "float32"), (0, 2, 3, 1))
    small = ops.image.resize(
        masks_nhwc, size, interpolation="bilinear", antialias=False
    )
    return ops.transpose(ops.cast(small >= 0.5, "float32"), (0, 3, 1, 2))


@keras.saving.register_keras_serializable(package="keras_solov2")
class SOLOv2TargetEncoder(LiveSettings, keras.layers.Layer):
    """Assigns SOLOv2 training targets, vectorised over images, instances, cells.

    Follows mmdetection's `SOLOV2Head._get_targets_single` exactly, but with
    no Python loop over instances, so it traces under `jit_compile=True`:

    1. An instance with scale `sqrt(box_w * box_h)` is positive on every level
       whose closed range `[lower, upper]` holds the scale (ranges overlap, so
       an object can be positive on two levels). Instances with an empty mask
       or a negative label (padding) are ignored.
    2. Its centre is the centre of mass of its mask, in padded-canvas pixels.
    3. The centre region is `center_sigma * box` (half-extents
       `0.5 * center_sigma * w/h`; the original SOLO's `sigma`, mmdet's
       `pos_scale`; not the Matrix NMS `nms_sigma`),
       mapped to cells with truncating division, then clamped to at most one
       cell around the centre cell: at most 3x3 positive cells per level.
    4. A later instance overwrites an earlier one in the category map, but
       every (instance, cell) pair keeps its own mask target.
    5. Mask targets are the instance masks downsampled to the mask-feature
       resolution with bilinear interpolation and a 0.5 threshold, which is
       what `mmcv.imrescale` does to a 0/1 uint8 mask.

    Static shapes: pairs are compacted to `max_positives` per image. Pairs
    beyond the cap are dropped and counted in `positives_overflow`.

    `scale_ranges`, `center_sigma`, `max_positives` and `train_scales` are
    settings
    (`SOLOv2TargetEncoder.SETTINGS`): validated whenever they are set and read
    at call time, so changing them on a built `keras_solov2.SOLOv2` takes
    effect at the next training step.

    `train_scales` is not read here: it is the training resize that
    `scale_ranges` were chosen for (object sizes are measured on the resized
    images), kept beside them so that a model saved to a preset or a
    `.keras` file knows the scales it trains at. `keras_solov2.training`
    (`keras-solov2 train`) reads it as `model.train_scales`.

    Args:
        num_grids: tuple of ints. Grid size S per level.
        scale_ranges: tuple of `(lower, upper)` pairs, one per level.
        center_sigma: float in (0, 1]. Centre-region scale. Defaults to
            `0.2`. (The keyword `sigma` of earlier versions still works, with
            a `DeprecationWarning`; saved configs with `sigma` load.)
        mask_stride: int. Stride of the mask features, the backbone's
            `mask_stride` (`SOLOv2` passes `backbone.mask_stride`). Defaults
            to `4` (`keras_solov2.utils.image_geometry.MASK_STRIDE`).
        max_positives: int. Cap on (instance, cell) pairs per image.
            Defaults to `500`.
        train_scales: `None` or a sequence of keep-ratio `(long, short)`
            training scales, one drawn per image (the presets hold the
            official ones, e.g. `(768, 512), (768, 480), ..., (768, 352)` for
            the light models). `None` leaves the choice to the trainer
            (`keras_solov2.training.training_scales`). Defaults to `None`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        masks: `(batch, M, H, W)` binary instance masks on the padded canvas;
            with `centers`, the compact `(batch, M, h, w)` mask targets
            instead (see `compact_mask_targets`).
        labels: `(batch, M)` int class indices, `-1` for padding slots.
        boxes: `(batch, M, 4)` float `[x1, y1, x2, y2]` canvas pixels.
        mask_size: `(h, w)`, the mask-feature size (`H / 4`, `W / 4`).
        centers: `None`, or `(batch, M, 2)` float32 `[y, x]` centres of mass
            in canvas pixels, computed from the full masks as step 2 does.
        areas: with `centers`: `(batch, M)` int mask areas in canvas pixels
            (`0` skips the instance, as an empty mask does).

    The compact form is what the readers in `keras_solov2.data` ship by
    default: step 2 and step 5 need nothing else of the full masks, which
    are `M * H * W` bytes per image (107 MB at 1344x800 with `M = 100`),
    and three times that as int32 and float32 copies here. The two forms
    give the same targets bit for bit.

    Returns:
        A dict with `category_targets` `(batch, cells)` int32 (class index,
        `-1` for background), `pair_instances` and `pair_cells`
        `(batch, max_positives)` int32, `pair_valid` `(batch, max_positives)`
        bool, `mask_targets` `(batch, M, h * w)` float32 0/1,
        `num_positive_cells` `(batch,)` int32 (distinct positive cells, mmdet's
        `num_pos`), `num_pairs` and `positives_overflow` `(batch,)` int32.

    Reference: SOLOv2, arXiv 2003.10152; SOLO, arXiv 1912.04488.
    """

    def __init__(
        self,
        num_grids,
        scale_ranges,
        center_sigma=0.2,
        mask_stride=image_geometry.MASK_STRIDE,
        max_positives=500,
        train_scales=None,
        **kwargs,
    ):
        if "sigma" in kwargs:
            warnings.warn(
                "SOLOv2TargetEncoder's `sigma` is now `center_sigma` (the Matrix "
                "NMS decay is the decoder's `nms_sigma`).",
                DeprecationWarning,
                stacklevel=2,
            )
            center_sigma = kwargs.pop("sigma")
        super().__init__(**kwargs)
        self.num_grids = tuple(int(s) for s in num_grids)
        self.scale_ranges = scale_ranges
        self.center_sigma = center_sigma
        self.mask_stride = int(mask_stride)
        self.max_positives = max_positives
        self.train_scales = train_scales
        offsets = np.cumsum([0] + [s * s for s in self.num_grids])
        self._level_offsets = [int(o) for o in offsets[:-1]]
        self.num_cells = int(offsets[-1])
        self.built = True  # no weights

    SETTINGS = ("scale_ranges", "center_sigma", "max_positives", "train_scales")

    def validate_setting(self, name, value):
        if name == "scale_ranges":
            try:
                value = tuple(tuple(float(v) for v in r) for r in value)
            except (TypeError, ValueError):
                value = ((),)
            if len(value) != len(self.num_grids) or any(
                len(r) != 2 or not 0 <= r[0] <= r[1] for r in value
            ):
                raise ValueError(
                    "`scale_ranges` needs one (lower, upper) pair per level, with "
                    f"0 <= lower <= upper; got {value!r} for {len(self.num_grids)} "
                    f"levels (num_grids {self.num_grids})."
                )
            return value
        if name == "center_sigma":
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"`center_sigma` must be in (0, 1], got {value!r}.")
            return float(value)
        if name == "train_scales":
            return _scale_pairs(value)
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"`max_positives` must be an int >= 1, got {value!r}.")
        return int(value)

    def call(self, masks, labels, boxes, mask_size, centers=None, areas=None):
        h, w = mask_size
        labels = ops.cast(labels, "int32")
        boxes = ops.cast(boxes, "float32")
        num_instances = masks.shape[1]
        if num_instances is None:
            raise ValueError(
                "SOLOv2TargetEncoder needs a static number of instance slots "
                "(pad ground truth to `max_instances`); got masks of shape "
                f"{masks.shape}."
            )
        canvas_h = ops.cast(h * self.mask_stride, "float32")
        canvas_w = ops.cast(w * self.mask_stride, "float32")

        if centers is None:
            center_y, center_x, area = centers_of_mass(masks)
            small = downsampled_masks(masks, (h, w))
        else:
            if areas is None:
                raise ValueError("`centers` needs `areas` (the mask areas).")
            if tuple(masks.shape[2:]) != (h, w) and None not in masks.shape[2:]:
                raise ValueError(
                    f"The compact mask targets are {tuple(masks.shape[2:])} but "
                    f"the mask features are {(h, w)}: they must be the canvas "
                    f"at stride {self.mask_stride}. Build the batches for this "
                    "model's canvas, or pass full masks."
                )
            centers = ops.cast(centers, "float32")
            center_y, center_x = centers[..., 0], centers[..., 1]
            area = ops.cast(areas, "int32")
            small = ops.cast(masks, "float32")
        valid = ops.logical_and(labels >= 0, area > 0)

        box_w = boxes[..., 2] - boxes[..., 0]
        box_h = boxes[..., 3] - boxes[..., 1]
        scale = ops.sqrt(box_w * box_h)
        half_w = 0.5 * box_w * self.center_sigma
        half_h = 0.5 * box_h * self.center_sigma

        covers, pair_cells, pair_valid = [], [], []
        for level, (grid, (lower, upper)) in enumerate(
            zip(self.num_grids, self.scale_ranges, strict=True)
        ):
            cell_size = np.float32(1.0 / grid)

            def to_cell(value, extent, cell_size=cell_size):
                return ops.cast(ops.floor(value / extent / cell_size), "int32")

            hit = ops.logical_and(
                valid, ops.logical_and(scale >= lower, scale <= upper)
            )
            coord_h = to_cell(center_y, canvas_h)
            coord_w = to_cell(center_x, canvas_w)
            top = ops.maximum(
                ops.maximum(to_cell(center_y - half_h, canvas_h), 0), coord_h - 1
            )
            down = ops.minimum(
                ops.minimum(to_cell(center_y + half_h, canvas_h), grid - 1),
                coord_h + 1,
            )
            left = ops.maximum(
                ops.maximum(to_cell(center_x - half_w, canvas_w), 0), coord_w - 1
            )
            right = ops.minimum(
                ops.minimum(to_cell(center_x + half_w, canvas_w), grid - 1),
                coord_w + 1,
            )
            # Dense coverage of this level's cells, for the category map.
            cell_i = np.repeat(np.arange(grid, dtype=np.int32), grid)
            cell_j = np.tile(np.arange(grid, dtype=np.int32), grid)
            e = lambda t: ops.expand_dims(t, -1)  # noqa: E731
            cover = (
                e(hit)
                & (cell_i >= e(top))
                & (cell_i <= e(down))
                & (cell_j >= e(left))
                & (cell_j <= e(right))
            )
            covers.append(cover)
            # The same cells enumerated per instance (<= 3x3), for the masks.
            di = np.repeat(np.arange(3, dtype=np.int32), 3)
            dj = np.tile(np.arange(3, dtype=np.int32), 3)
            i = e(top) + di
            j = e(left) + dj
            pair_valid.append(e(hit) & (i <= e(down)) & (j <= e(right)))
            pair_cells.append(self._level_offsets[level] + i * grid + j)

        cover = ops.concatenate(covers, axis=-1)  # (B, M, K)
        instance_ids = ops.reshape(ops.arange(num_instances, dtype="int32"), (1, -1, 1))
        winner = ops.max(ops.where(cover, instance_ids, -1), axis=1)  # (B, K)
        winner_label = ops.take_along_axis(labels, ops.maximum(winner, 0), axis=1)
        category_targets = ops.where(winner >= 0, winner_label, -1)
        num_positive_cells = ops.sum(ops.cast(winner >= 0, "int32"), axis=1)

        # (B, M, L*9) candidate pairs -> compact the valid ones to a fixed cap.
        pair_cells = ops.concatenate(pair_cells, axis=-1)
        pair_valid = ops.concatenate(pair_valid, axis=-1)
        per_instance = 9 * len(self.num_grids)
        num_candidates = num_instances * per_instance
        pair_cells = ops.reshape(pair_cells, (-1, num_candidates))
        pair_valid = ops.reshape(pair_valid, (-1, num_candidates))
        order = ops.arange(num_candidates, dtype="float32")
        priority = ops.where(pair_valid, -order, -1e9)
        k = min(self.max_positives, num_candidates)
        _, picked = ops.top_k(priority, k=k, sorted=True)
        picked_valid = ops.take_along_axis(pair_valid, picked, axis=1)
        picked_cells = ops.take_along_axis(pair_cells, picked, axis=1)
        picked_instances = picked // per_instance
        num_pairs = ops.sum(ops.cast(pair_valid, "int32"), axis=1)
        if k < self.max_positives:
            pad = self.max_positives - k
            picked_valid = ops.pad(picked_valid, ((0, 0), (0, pad)))
            picked_cells = ops.pad(picked_cells, ((0, 0), (0, pad)))
            picked_instances = ops.pad(picked_instances, ((0, 0), (0, pad)))
        picked_cells = ops.where(picked_valid, picked_cells, 0)
        picked_instances = ops.where(picked_valid, picked_instances, 0)

        mask_targets = ops.reshape(small, (-1, num_instances, h * w))
        return {
            "category_targets": category_targets,
            "pair_instances": ops.cast(picked_instances, "int32"),
            "pair_cells": ops.cast(picked_cells, "int32"),
            "pair_valid": picked_valid,
            "mask_targets": mask_targets,
            "num_positive_cells": num_positive_cells,
            "num_pairs": num_pairs,
            "positives_overflow": ops.maximum(num_pairs - self.max_positives, 0),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_grids": self.num_grids,
                "scale_ranges": self.scale_ranges,
                "center_sigma": self.center_sigma,
                "mask_stride": self.mask_stride,
                "max_positives": self.max_positives,
                "train_scales": self.train_scales,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "sigma" in config:  # saved before the rename
            config["center_sigma"] = config.pop("sigma")
        return cls(**config)


def _scale_pairs(value):
    """`None`, or `value` as a tuple of `(long, short)` int pairs."""
    if value is None:
        return None
    try:
        pairs = tuple(tuple(v for v in pair) for pair in value)
        valid = len(pairs) > 0 and all(
            len(p) == 2
            and all(not isinstance(v, bool) and int(v) == v and v >= 1 for v in p)
            for p in pairs
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "`train_scales` must be None or a non-empty sequence of (long, short) "
            f"pairs of positive ints, got {value!r}."
        )
    return tuple((int(max(p)), int(min(p))) for p in pairs)
