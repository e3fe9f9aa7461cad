"""The training geometry shared by every reader, in-graph.

Per image, `draw_geometry` picks (from the seed and the image's position
only, so every reader draws the same):

- a resize: keep-ratio to a `(long, short)` scale drawn from `scales` (the
  mmdetection multi-scale recipe), to fit the canvas (`scales=None`), or, with
  large-scale jitter, to fit the canvas times a factor drawn from
  `[low, high]` (Ghiasi et al., "Simple Copy-Paste", 2021);
- a crop window of the resized image, the whole image unless large-scale
  jitter made it larger than the canvas (then a random canvas-sized window);
- a horizontal flip.

`transform_image`, `sample_masks` and `finish_instances` then apply exactly
the same geometry to the image, the masks and the boxes. Masks use a
pixel-centre nearest-neighbour resize computed in exact integers: output
row `i` of the resized image samples input row `floor((i + 0.5) * h / rh)`.

Images stay raw (RGB, 0..255): the model normalises inside its graph. The
canvas padding is `PIXEL_MEAN`, which that normalisation turns into exactly
mmdetection's zero padding. The formulas (keep-ratio factor, rounding,
padding) are `keras_solov2.utils.image_geometry`'s, evaluated here with the
TensorFlow namespace `TensorFlowOps`, in float64 for the sizes as mmcv
computes them in Python doubles.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_solov2.utils import image_geometry


class TensorFlowOps:
    """The `xp` array namespace of `image_geometry`, in TensorFlow."""

    minimum = staticmethod(tf.minimum)
    maximum = staticmethod(tf.maximum)
    floor = staticmethod(tf.floor)
    pad = staticmethod(tf.pad)
    arange = staticmethod(tf.range)
    where = staticmethod(tf.where)
    logical_and = staticmethod(tf.logical_and)
    expand_dims = staticmethod(tf.expand_dims)
    shape = staticmethod(tf.shape)


def resized_sizes(height, width, canvas, scales):
    """Keep-ratio resized `(h, w)` for every scale: int32 `(..., S, 2)`.

    `mmcv.imrescale` for `(long, short)` scales (the factor that fits both),
    fit-to-canvas for `scales=None` (`S = 1`); float64, rounded half up.
    `height` and `width` are scalars (one image, in-graph) or arrays (every
    image at once, for checks before reading).
    """
    xp = TensorFlowOps
    h = tf.cast(height, tf.float64)[..., None]
    w = tf.cast(width, tf.float64)[..., None]
    canvas_h, canvas_w = tf.unstack(tf.convert_to_tensor(canvas, tf.int32))
    if scales is None:
        factor = image_geometry.fit_factor(
            h, w, tf.cast(canvas_h, tf.float64), tf.cast(canvas_w, tf.float64), xp
        )
    else:
        longs = tf.constant([max(s) for s in scales], tf.float64)
        shorts = tf.constant([min(s) for s in scales], tf.float64)
        factor = image_geometry.rescale_factor(h, w, longs, shorts, xp)
    rh = tf.cast(image_geometry.scaled_length(h, factor, xp), tf.int32)
    rw = tf.cast(image_geometry.scaled_length(w, factor, xp), tf.int32)
    if scales is None:
        rh, rw = tf.minimum(rh, canvas_h), tf.minimum(rw, canvas_w)
    return tf.stack([rh, rw], axis=-1)


def draw_geometry(
    height, width, canvas, scales, jitter, training, random_seed, index, flip_prob
):
    """Resize, crop window and flip of one image (see the module docstring).

    A pure function of `random_seed` (the per-iteration seed) and `index`
    (the image's position), so that every reader draws the same. Without
    `training`: first scale (or fit to the canvas), no crop, no flip.

    `canvas` is `(H, W)`, python ints or an int32 `(2,)` tensor (the
    image's canvas with aspect-ratio grouping).

    Returns:
        dict of tensors: `flip` bool; `size` int32 `(2,)` resized `(rh, rw)`;
        `offset` int32 `(2,)` top-left corner of the window in the resized
        image; `window` int32 `(2,)` its `(h, w)`, at most the canvas.
    """
    canvas_t = tf.convert_to_tensor(canvas, tf.int32)
    if training:
        u = tf.random.stateless_uniform(
            [4], seed=tf.stack([random_seed, index]), dtype=tf.float32
        )
        flip = u[0] < flip_prob
    else:
        u = tf.zeros([4])
        flip = tf.constant(False)
    if jitter is None:
        num_scales = len(scales) if scales is not None else 1
        choice = tf.minimum(tf.cast(u[1] * num_scales, tf.int32), num_scales - 1)
        size = resized_sizes(height, width, canvas, scales)[choice]
        return {
            "flip": flip,
            "size": size,
            "offset": tf.zeros([2], tf.int32),
            "window": size,
        }
    low, high = jitter
    s = tf.cast(low + (high - low) * u[1], tf.float64) if training else 1.0
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    xp = TensorFlowOps
    canvas_f = tf.cast(canvas_t, tf.float64)
    factor = image_geometry.fit_factor(h, w, canvas_f[0] * s, canvas_f[1] * s, xp)
    size = image_geometry.scaled_length(tf.stack([h, w]), factor, xp)
    size = tf.maximum(tf.cast(size, tf.int32), 1)
    spare = tf.maximum(size - canvas_t, 0)
    offset = tf.minimum(
        tf.cast(tf.cast(spare + 1, tf.float32) * u[2:4], tf.int32), spare
    )
    window = tf.minimum(size, canvas_t)
    return {"flip": flip, "size": size, "offset": offset, "window": window}


def nearest_indices(n_in, n_out, start, count):
    """Input rows of output rows `start .. start + count - 1`: int64 `(count,)`.

    Pixel-centre nearest neighbour, `floor((i + 0.5) * n_in / n_out)`, in
    exact integers.
    """
    n_in, n_out = tf.cast(n_in, tf.int64), tf.cast(n_out, tf.int64)
    i = tf.cast(start, tf.int64) + tf.range(tf.cast(count, tf.int64))
    return (2 * i + 1) * n_in // (2 * n_out)


def transform_image(image, size, flip, canvas, offset=None, window=None):
    """Resize, crop, flip and pad one decoded image; no normalisation.

    Args:
        image: uint8 `(h, w, 3)` tensor.
        size: int32 `(2,)` tensor, resized `(rh, rw)`.
        flip: bool scalar tensor, horizontal flip (of the window).
        canvas: `(H, W)`, the padded output size: python ints, or an int32
            `(2,)` tensor (then the output's height and width are not static).
        offset, window: int32 `(2,)` crop of the resized image; default the
            whole image.

    Returns:
        float32 `(H, W, 3)`, raw RGB: bilinear (half-pixel, no
        antialiasing, rounded to the 0..255 grid as mmcv does on uint8
        images), padded at the bottom/right with `image_geometry.PIXEL_MEAN`
        (`image_geometry.pad_with_mean`; zero after the model's
        normalisation).
    """
    image = tf.image.resize(
        tf.cast(image, tf.float32), size, method="bilinear", antialias=False
    )
    if offset is not None:
        image = image[
            offset[0] : offset[0] + window[0], offset[1] : offset[1] + window[1]
        ]
    else:
        window = size
    image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    canvas_h, canvas_w = _canvas_sides(canvas)
    image = image_geometry.pad_with_mean(
        image, (canvas_h, canvas_w), TensorFlowOps, image_size=(window[0], window[1])
    )
    image.set_shape([*_static_canvas(canvas), 3])
    return image


def _static_canvas(canvas):
    """`(H, W)` as python ints, or `(None, None)` for a canvas tensor."""
    if isinstance(canvas, tf.Tensor):
        return (None, None)
    return tuple(int(v) for v in canvas)


def _canvas_sides(canvas):
    if isinstance(canvas, tf.Tensor):
        return canvas[0], canvas[1]
    return tuple(int(v) for v in canvas)


def sample_masks(masks, original_hw, geometry):
    """`(n, h, w)` masks resized and cropped to the window: `(n, wh, ww)`."""
    h, w = original_hw
    size, offset, window = geometry["size"], geometry["offset"], geometry["window"]
    rows = nearest_indices(h, size[0], offset[0], window[0])
    cols = nearest_indices(w, size[1], offset[1], window[1])
    return tf.gather(tf.gather(masks, rows, axis=1), cols, axis=2)


MASK_STRIDE = image_geometry.MASK_STRIDE  # the mask features' stride
MASK_TARGETS = ("compact", "full")


def compact_mask_targets(masks, stride=MASK_STRIDE):
    """What SOLOv2's target assignment needs of `(n, H, W)` canvas masks.

    Returns `{"mask_targets": (n, H/stride, W/stride) uint8,
    "mask_centers": (n, 2) float32 [y, x], "mask_areas": (n,) int32}`, the
    values that `SOLOv2TargetEncoder` computes from full masks
    (`centers_of_mass`, `downsampled_masks`), here in TensorFlow for the
    input pipeline. The downsampling is bilinear with half-pixel centres at
    exactly `1 / stride`, then `>= 0.5`: for an even stride each output
    pixel is the mean of a 2x2 block (rows and columns `stride * i +
    stride / 2 - 1` and the next), so it is computed from that block in
    integers; for an odd stride it is one pixel.
    """
    n, height, width = (masks.shape[i] for i in range(3))
    if height is None or width is None:  # a per-image canvas, checked before
        static = (None, None)
        height, width = tf.shape(masks)[1], tf.shape(masks)[2]
    elif height % stride or width % stride:
        raise ValueError(
            f"The canvas {height}x{width} must be a multiple of the mask stride "
            f"{stride}."
        )
    else:
        static = (height // stride, width // stride)
    masks_i = tf.cast(masks, tf.int32)
    row_counts = tf.reduce_sum(masks_i, axis=2)
    col_counts = tf.reduce_sum(masks_i, axis=1)
    area = tf.reduce_sum(row_counts, axis=1)
    area_f = tf.maximum(tf.cast(area, tf.float32), 1e-6)
    ys = tf.range(height, dtype=tf.int32)
    xs = tf.range(width, dtype=tf.int32)
    center_y = tf.cast(tf.reduce_sum(row_counts * ys, axis=1), tf.float32) / area_f
    center_x = tf.cast(tf.reduce_sum(col_counts * xs, axis=1), tf.float32) / area_f
    if stride % 2:
        first = (stride - 1) // 2
        small = masks[:, first::stride, first::stride]
    else:
        first = stride // 2 - 1
        block = [
            tf.cast(masks[:, first + i :: stride, first + j :: stride], tf.int32)
            for i in (0, 1)
            for j in (0, 1)
        ]
        small = tf.cast(tf.add_n(block) >= 2, tf.uint8)
    small.set_shape([n, *static])
    return {
        "mask_targets": small,
        "mask_centers": tf.stack([center_y, center_x], axis=1),
        "mask_areas": area,
    }


def finish_instances(
    masks, labels, boxes, original_hw, geometry, canvas, m, mask_targets="compact"
):
    """Scales, crops, clips and flips boxes, flips masks, pads all to `m`.

    Args:
        masks: uint8 `(n, wh, ww)`, already resized and cropped to the
            window (`sample_masks`), `n <= m`.
        labels: int32 `(n,)`.
        boxes: float64 `(n, 4)` `[x1, y1, x2, y2]` in original pixels.
        original_hw: the original `(h, w)`.
        geometry: from `draw_geometry`.
        canvas: `(H, W)`, python ints or an int32 `(2,)` tensor.
        m: int, instance slots.
        mask_targets: `"compact"` or `"full"`, see Returns.

    Returns:
        `{"labels": (m,) int32 (-1 padding), "boxes": (m, 4) float32}` on the
        canvas, and with `mask_targets="full"` `"masks"`: `(m, H, W)` uint8;
        with `"compact"` the three entries of `compact_mask_targets` padded
        to `m` slots (zeros). An instance cropped away keeps its slot with an
        empty mask and a zero-area box (SOLOv2's target assignment skips
        empty masks).
    """
    h, w = original_hw
    size, offset, window = geometry["size"], geometry["offset"], geometry["window"]
    n = tf.shape(labels)[0]
    f64 = lambda v: tf.cast(v, tf.float64)
    sx, sy = f64(size[1]) / f64(w), f64(size[0]) / f64(h)
    ox, oy = f64(offset[1]), f64(offset[0])
    ww, wh = f64(window[1]), f64(window[0])
    x1 = tf.clip_by_value(boxes[:, 0] * sx - ox, 0.0, ww)
    y1 = tf.clip_by_value(boxes[:, 1] * sy - oy, 0.0, wh)
    x2 = tf.clip_by_value(boxes[:, 2] * sx - ox, 0.0, ww)
    y2 = tf.clip_by_value(boxes[:, 3] * sy - oy, 0.0, wh)
    masks, x1, x2 = tf.cond(
        geometry["flip"],
        lambda: (tf.reverse(masks, axis=[2]), ww - x2, ww - x1),
        lambda: (masks, x1, x2),
    )
    boxes = tf.cast(tf.stack([x1, y1, x2, y2], axis=1), tf.float32)
    canvas_h, canvas_w = _canvas_sides(canvas)
    static_h, static_w = _static_canvas(canvas)
    labels = tf.pad(labels, [[0, m - n]], constant_values=-1)
    labels.set_shape([m])
    boxes = tf.pad(boxes, [[0, m - n], [0, 0]])
    boxes.set_shape([m, 4])
    masks = tf.reshape(masks, [n, window[0], window[1]])
    canvas_pad = [[0, canvas_h - window[0]], [0, canvas_w - window[1]]]
    if mask_targets == "full":
        masks = tf.pad(masks, [[0, m - n]] + canvas_pad)
        masks.set_shape([m, static_h, static_w])
        return {"masks": masks, "labels": labels, "boxes": boxes}
    # Only the `n` real instances reach the canvas size, briefly.
    masks = tf.pad(masks, [[0, 0]] + canvas_pad)
    masks.set_shape([None, static_h, static_w])
    compact = compact_mask_targets(masks)
    for key, value in compact.items():
        rest = value.shape[1:]
        value = tf.pad(value, [[0, m - n]] + [[0, 0]] * len(rest))
        compact[key] = tf.ensure_shape(value, [m, *rest])
    return {**compact, "labels": labels, "boxes": boxes}


def check_fits(size, canvas, file_name, advice):
    """An assert that a resized `size` fits the canvas (naming the file).

    Only needed without large-scale jitter (whose window always fits).
    `advice` is the end of the message (`Augmentation.misfit_advice`).
    """
    fits = tf.reduce_all(size <= tf.convert_to_tensor(canvas, tf.int32))
    if isinstance(canvas, tf.Tensor):
        where = ["which does not fit its orientation's canvas (H, W)", canvas]
    else:
        where = [f"which does not fit the {canvas[0]}x{canvas[1]} canvas."]
    return tf.debugging.Assert(
        fits & tf.reduce_all(size >= 1),
        ["Image", file_name, "resizes to", size, *where, advice],
    )


def _canvas(image_size, scales, size_divisor, grouping=False):
    """The checked canvas `(H, W)`; by default the one that fits `scales`.

    With aspect-ratio `grouping`, the landscape canvas `(short, long)`.
    """
    if image_size is None and scales is not None and grouping:
        return image_geometry.landscape_canvas_for_scales(scales, size_divisor)
    if image_size is None:
        if scales is None:
            raise ValueError(
                "`image_size` (the canvas (H, W)) is required without `scales`: "
                "fit-to-canvas and `large_scale_jitter` resize relative to it. "
                f"Pass e.g. image_size=(512, 512) (multiples of size_divisor="
                f"{size_divisor}), or give `scales` to let the canvas default "
                "to the smallest square that fits them."
            )
        return image_geometry.canvas_for_scales(scales, size_divisor)
    canvas = tuple(int(v) for v in image_size)
    if (
        len(canvas) != 2
        or min(canvas) <= 0
        or canvas[0] % size_divisor
        or canvas[1] % size_divisor
    ):
        raise ValueError(
            f"`image_size` must be (H, W) with both multiples of `size_divisor` "
            f"({size_divisor}), got {tuple(image_size)}."
        )
    return (min(canvas), max(canvas)) if grouping else canvas


def _scales(scales):
    """`None` or a list of `(long, short)` int pairs (one pair allowed)."""
    if scales is None:
        return None
    if len(scales) == 2 and all(np.isscalar(v) for v in scales):
        scales = [scales]
    scales = [tuple(int(v) for v in s) for s in scales]
    if not scales or any(len(s) != 2 or min(s) < 1 for s in scales):
        raise ValueError(
            f"`scales` must be (long, short) pairs of positive ints, got {scales}."
        )
    return scales


def _jitter(jitter, scales):
    """`None` or the checked `(low, high)` of large-scale jitter."""
    if jitter is None:
        return None
    if scales is not None:
        raise ValueError(
            "Pass either `scales` (multi-scale resize) or `large_scale_jitter` "
            "(resize relative to the canvas), not both."
        )
    try:
        low, high = (float(v) for v in jitter)
    except (TypeError, ValueError):
        raise ValueError(
            f"`large_scale_jitter` must be a (low, high) pair, got {jitter!r}."
        ) from None
    if not 0.0 < low <= high:
        raise ValueError(
            "`large_scale_jitter` must be (low, high) with 0 < low <= high (the "
            f"paper uses (0.1, 2.0)), got {jitter!r}."
        )
    return (low, high)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One reader's validated batching arguments, and the geometry they give.

    Build it with `Augmentation.from_args`; `draw`, `image` and `instances`
    then wrap `draw_geometry`, `transform_image` and `finish_instances`.
    """

    canvas: tuple
    scales: list | None
    jitter: tuple | None
    training: bool
    flip_probability: float
    max_instances: int
    size_divisor: int = image_geometry.SIZE_DIVISOR
    mask_targets: str = "compact"
    aspect_ratio_grouping: bool = False

    @classmethod
    def from_args(
        cls,
        image_size,
        batch_size,
        max_instances,
        flip_probability,
        scales,
        large_scale_jitter,
        training,
        size_divisor=image_geometry.SIZE_DIVISOR,
        mask_targets="compact",
        aspect_ratio_grouping=False,
    ):
        """Checks the batching arguments shared by every reader.

        `image_size=None` with `scales` gives the canvas
        `image_geometry.canvas_for_scales(scales, size_divisor)`, the
        smallest square that every scale fits in both orientations; without
        `scales` the canvas must be given. `size_divisor` is the model's
        (`model.size_divisor`); the canvas must be a multiple of it.

        With `aspect_ratio_grouping`, `canvas` is the landscape canvas
        (height <= width: `image_size` sorted, or
        `image_geometry.landscape_canvas_for_scales`) and portrait images
        (taller than wide) go on its transpose.

        Raises:
            ValueError: naming the argument and what it must be.
        """
        if (
            isinstance(size_divisor, bool)
            or not isinstance(size_divisor, (int, np.integer))
            or size_divisor < 1
        ):
            raise ValueError(
                "`size_divisor` must be a positive int (pass `model.size_divisor`), "
                f"got {size_divisor!r}."
            )
        size_divisor = int(size_divisor)
        scales = _scales(scales)
        jitter = _jitter(large_scale_jitter, scales)
        if not isinstance(aspect_ratio_grouping, (bool, np.bool_)):
            raise ValueError(
                "`aspect_ratio_grouping` must be True or False, got "
                f"{aspect_ratio_grouping!r}."
            )
        grouping = bool(aspect_ratio_grouping)
        canvas = _canvas(image_size, scales, size_divisor, grouping)
        if batch_size < 1 or max_instances < 1:
            raise ValueError(
                "`batch_size` and `max_instances` must be >= 1, got "
                f"{batch_size} and {max_instances}."
            )
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(
                f"`flip_probability` must be in [0, 1], got {flip_probability}."
            )
        if mask_targets not in MASK_TARGETS:
            raise ValueError(
                f"`mask_targets` must be one of {MASK_TARGETS}, got "
                f"{mask_targets!r}: 'compact' ships what SOLOv2's loss needs at "
                "stride 4, 'full' the canvas-sized masks (to look at them)."
            )
        if mask_targets == "compact" and (
            canvas[0] % MASK_STRIDE or canvas[1] % MASK_STRIDE
        ):
            raise ValueError(
                f"`mask_targets='compact'` needs a canvas that is a multiple of "
                f"{MASK_STRIDE}, got {canvas}; pass `mask_targets='full'`."
            )
        return cls(
            canvas,
            scales,
            jitter,
            bool(training),
            flip_probability,
            int(max_instances),
            size_divisor,
            mask_targets,
            grouping,
        )

    @property
    def portrait_canvas(self):
        """The canvas of portrait images: the transpose with grouping."""
        if self.aspect_ratio_grouping:
            return self.canvas[::-1]
        return self.canvas

    def canvas_for(self, height, width):
        """The canvas of an image: python ints, or a tensor with grouping.

        mmdetection's `AspectRatioBatchSampler` rule: an image wider than
        or as wide as tall is landscape.
        """
        if not self.aspect_ratio_grouping:
            return self.canvas
        return tf.where(
            tf.convert_to_tensor(height) > tf.convert_to_tensor(width),
            tf.constant(self.portrait_canvas, tf.int32),
            tf.constant(self.canvas, tf.int32),
        )

    def misfit_advice(self):
        """What to do about an image that does not fit the canvas."""
        if self.scales is None:
            return "Use a larger `image_size`."
        if self.aspect_ratio_grouping:
            h, w = image_geometry.landscape_canvas_for_scales(
                self.scales, self.size_divisor
            )
            return (
                f"Use a larger `image_size` or smaller `scales`: {h}x{w} (and "
                f"{w}x{h} for portrait images) fits every scale (omitting "
                "`image_size` picks it)."
            )
        side, _ = image_geometry.canvas_for_scales(self.scales, self.size_divisor)
        return (
            f"Use a larger `image_size` or smaller `scales`: a {side}x{side} "
            "canvas fits every scale in both orientations (omitting "
            "`image_size` picks it)."
        )

    def draw(self, height, width, random_seed, index):
        """`draw_geometry` on the image's canvas, which joins the geometry."""
        canvas = self.canvas_for(height, width)
        geometry = draw_geometry(
            height,
            width,
            canvas,
            self.scales,
            self.jitter,
            self.training,
            random_seed,
            index,
            self.flip_probability,
        )
        return {**geometry, "canvas": canvas}

    def checked(self, geometry, file_name, checks=()):
        """`geometry` made to wait for `checks` and the fit check.

        Every transform of the image, masks and boxes uses the geometry, so
        a failed check stops the example before any of them can fail with
        a less helpful error (a negative padding, say). There is no fit
        check with large-scale jitter, whose window always fits.
        """
        checks = list(checks)
        if self.jitter is None:
            advice = self.misfit_advice()
            checks.append(
                check_fits(geometry["size"], geometry["canvas"], file_name, advice)
            )
        with tf.control_dependencies(checks):
            return {
                key: value if key == "canvas" else tf.identity(value)
                for key, value in geometry.items()
            }

    def image(self, image, geometry):
        return transform_image(
            image,
            geometry["size"],
            geometry["flip"],
            geometry["canvas"],
            geometry["offset"],
            geometry["window"],
        )

    def instances(self, masks, labels, boxes, original_hw, geometry):
        return finish_instances(
            masks,
            labels,
            boxes,
            original_hw,
            geometry,
            geometry["canvas"],
            self.max_instances,
            self.mask_targets,
        )


def batch_examples(
    elements, load, batch_size, seed, repeat, drop_remainder, grouping=False
):
    """Pairs `elements` with per-epoch random seeds, maps `load`, batches.

    `load(element, random_seed)` builds one example; the seeds change every
    iteration but are fixed by `seed`. `grouping`: see `batch_by_canvas`.
    """
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((elements, randoms))
    if repeat:
        ds = ds.repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = batch_by_canvas(ds, batch_size, drop_remainder, grouping)
    return ds.prefetch(tf.data.AUTOTUNE)


def batch_by_canvas(ds, batch_size, drop_remainder, grouping):
    """`ds.batch`, or with aspect-ratio `grouping` batches of one canvas.

    With grouping, examples (whose first component is the image) come on a
    landscape or a portrait canvas; each batch holds `batch_size` examples
    of one canvas, in the order the canvas fills up, like mmdetection's
    `AspectRatioBatchSampler`. The batches' height and width are then not
    static (`None` in the element spec). At the end of a finite epoch each
    canvas's incomplete batch is kept, or dropped with `drop_remainder`.
    """
    if not grouping:
        return ds.batch(batch_size, drop_remainder=drop_remainder)

    def portrait(image, *rest):
        shape = tf.shape(image)
        return tf.cast(shape[0] > shape[1], tf.int64)

    return ds.group_by_window(
        key_func=portrait,
        reduce_func=lambda key, window: window.batch(
            batch_size, drop_remainder=drop_remainder
        ),
        window_size=batch_size,
    )
