"""One reader's checked batching arguments, and the geometry they give.

`Augmentation.from_options` validates the options every reader shares (canvas,
scales, large-scale jitter, flip, instance slots, size divisor, mask targets,
aspect-ratio grouping); `draw`, `image` and `instances` then apply
`keras_solov2.data.transforms`'s geometry to one example.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_solov2.data.transforms import (
    MASK_STRIDE,
    MASK_TARGETS,
    draw_geometry,
    finish_instances,
    transform_image,
)
from keras_solov2.utils import image_geometry


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


def _canvas(canvas, scales, size_divisor, grouping=False):
    """The checked canvas `(H, W)`; by default the one that fits `scales`.

    With aspect-ratio `grouping`, the landscape canvas `(short, long)`.
    """
    if canvas is None and scales is not None and grouping:
        return image_geometry.landscape_canvas_for_scales(scales, size_divisor)
    if canvas is None:
        if scales is None:
            raise ValueError(
                "`canvas` (H, W) is required without `scales`: fit-to-canvas "
                "and `large_scale_jitter` resize relative to it. Pass e.g. "
                f"canvas=(512, 512) (multiples of size_divisor={size_divisor}), "
                "or give `scales` to let the canvas default to the smallest "
                "square that fits them."
            )
        return image_geometry.canvas_for_scales(scales, size_divisor)
    given = canvas
    canvas = tuple(int(v) for v in canvas)
    if (
        len(canvas) != 2
        or min(canvas) <= 0
        or canvas[0] % size_divisor
        or canvas[1] % size_divisor
    ):
        raise ValueError(
            f"`canvas` must be (H, W) with both multiples of `size_divisor` "
            f"({size_divisor}), got {tuple(given)}."
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

    Build it with `Augmentation.from_options`; `draw`, `image` and `instances`
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
    def from_options(cls, options):
        """Checks the geometry and batching options (`PipelineOptions`).

        `canvas=None` with `scales` gives the canvas
        `image_geometry.canvas_for_scales(scales, size_divisor)`, the
        smallest square that every scale fits in both orientations; without
        `scales` the canvas must be given. `size_divisor` is the model's
        (`model.size_divisor`); the canvas must be a multiple of it.

        With `aspect_ratio_grouping`, `canvas` is the landscape canvas
        (height <= width: `canvas` sorted, or
        `image_geometry.landscape_canvas_for_scales`) and portrait images
        (taller than wide) go on its transpose.

        Raises:
            ValueError: naming the argument and what it must be.
        """
        size_divisor = options.size_divisor
        max_instances, batch_size = options.max_instances, options.batch_size
        flip_probability = options.flip_probability
        mask_targets = options.mask_targets
        aspect_ratio_grouping = options.aspect_ratio_grouping
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
        scales = _scales(options.scales)
        jitter = _jitter(options.large_scale_jitter, scales)
        if not isinstance(aspect_ratio_grouping, (bool, np.bool_)):
            raise ValueError(
                "`aspect_ratio_grouping` must be True or False, got "
                f"{aspect_ratio_grouping!r}."
            )
        grouping = bool(aspect_ratio_grouping)
        canvas = _canvas(options.canvas, scales, size_divisor, grouping)
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
            bool(options.training),
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
            return "Use a larger `canvas`."
        if self.aspect_ratio_grouping:
            h, w = image_geometry.landscape_canvas_for_scales(
                self.scales, self.size_divisor
            )
            return (
                f"Use a larger `canvas` or smaller `scales`: {h}x{w} (and "
                f"{w}x{h} for portrait images) fits every scale (omitting "
                "`canvas` picks it)."
            )
        side, _ = image_geometry.canvas_for_scales(self.scales, self.size_divisor)
        return (
            f"Use a larger `canvas` or smaller `scales`: a {side}x{side} "
            "canvas fits every scale in both orientations (omitting "
            "`canvas` picks it)."
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
