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
