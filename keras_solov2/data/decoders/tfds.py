"""Decoder of tfds-style example dicts of instance masks, in-graph.

The layout `tensorflow_datasets` produces (an `image` plus a nested `objects`
dict of per-instance features) or any dataset of such dicts: images as
integers, floats (with `image_scale`) or encoded bytes; masks stacked or as
an instance-id image (COCO-panoptic RGB ids included); boxes given or derived
from the masks. Instances with empty masks are left out and reported.
"""

import sys

import tensorflow as tf

from keras_solov2.data.decoders.base import Decoder
from keras_solov2.data.images import decode_rgb

DEFAULT_FEATURE_MAP = {
    "image": "image",
    "masks": "objects/mask",
    "labels": "objects/label",
    "boxes": None,
    "instance_ids": None,
}
MASK_FORMATS = ("stack", "id_image")
BOX_FORMATS = ("tfds", "xyxy")
ON_EMPTY = ("warn", "raise", "ignore_but_count")


def _lookup(example, path, role):
    """`example["a"]["b"]` for `path="a/b"`, with a clear error if missing."""
    value = example
    for part in path.split("/"):
        if not isinstance(value, dict) or part not in value:
            keys = list(value) if isinstance(value, dict) else type(value).__name__
            raise KeyError(
                f"feature_map[{role!r}] = {path!r}: no key {part!r} in the "
                f"example (available: {keys})."
            )
        value = value[part]
    return value


def _instance_masks(raw, mask_format, instance_ids, num_labels):
    """bool `(N, h, w)` masks from a mask stack or an instance-id image."""
    if mask_format == "stack":
        if raw.shape.rank == 4:
            raw = raw[..., 0]
        if raw.shape.rank != 3:
            raise ValueError(
                "mask_format='stack' needs (N, H, W) or (N, H, W, 1) masks, got "
                f"shape {raw.shape}."
            )
        return tf.not_equal(raw, tf.zeros([], raw.dtype))
    # Instance-id image: (H, W), (H, W, 1), or (H, W, 3) RGB-encoded ids
    # (id = R + 256 G + 256^2 B, the COCO panoptic PNG convention).
    if raw.shape.rank == 3:
        if raw.shape[-1] == 3:
            rgb = tf.cast(raw, tf.int64)
            raw = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        else:
            raw = raw[..., 0]
    if raw.shape.rank != 2:
        raise ValueError(
            "mask_format='id_image' needs an (H, W), (H, W, 1) or (H, W, 3) id "
            f"image, got shape {raw.shape}."
        )
    ids = tf.cast(raw, tf.int64)
    if instance_ids is None:
        instance_ids = tf.range(1, num_labels + 1, dtype=tf.int64)
    else:
        instance_ids = tf.cast(instance_ids, tf.int64)
    return tf.equal(ids[None], instance_ids[:, None, None])


def _uint8_image(image, path, image_scale):
    """The `(h, w, 3)` image feature as uint8 0..255, checked.

    Floats are scaled by `255 / image_scale` and rounded; values outside
    `[0, image_scale]` (or outside 0..255 for integer types other than
    uint8) fail in-graph instead of being clipped or wrapped.
    """
    where = f"from_tfds: feature_map['image'] = {path!r}"
    if image.dtype.is_floating:
        if image_scale is None:
            raise ValueError(
                f"{where} is a {image.dtype.name} image, whose scale cannot be "
                "guessed. Pass image_scale=255.0 if its values are on the 0..255 "
                "scale, image_scale=1.0 if they are in [0, 1]."
            )
        image = tf.cast(image, tf.float32)
        inside = tf.debugging.assert_equal(
            tf.reduce_all((image >= 0.0) & (image <= image_scale)),
            True,
            message=f"{where}: float image values must be in [0, image_scale="
            f"{image_scale}]; is image_scale right?",
        )
        with tf.control_dependencies([inside]):
            image = tf.round(image * (255.0 / image_scale))
        return tf.cast(image, tf.uint8)
    if image_scale is not None:
        raise ValueError(
            f"{where} is a {image.dtype.name} image; `image_scale` is only for "
            "float images. Leave it None."
        )
    if image.dtype == tf.uint8:
        return image
    if not image.dtype.is_integer:
        raise ValueError(
            f"{where} has dtype {image.dtype.name}; expected uint8, another "
            "integer type with values 0..255, a float type (with "
            "`image_scale`) or encoded image bytes."
        )
    inside = tf.debugging.assert_equal(
        tf.reduce_all(
            (image >= tf.zeros([], image.dtype))
            & (image <= tf.constant(255, image.dtype))
        ),
        True,
        message=f"{where}: {image.dtype.name} image values must be in 0..255",
    )
    with tf.control_dependencies([inside]):
        return tf.cast(image, tf.uint8)


def _tight_boxes(masks):
    """float64 `(N, 4)` `[x1, y1, x2 + 1, y2 + 1]` pixel edges of bool masks."""
    rows = tf.reduce_any(masks, axis=2)  # (N, h)
    cols = tf.reduce_any(masks, axis=1)  # (N, w)

    def edges(any_along):
        length = tf.shape(any_along, out_type=tf.int64)[1]
        idx = tf.range(length, dtype=tf.int64)[None]
        first = tf.reduce_min(tf.where(any_along, idx, length), axis=1)
        last = tf.reduce_max(tf.where(any_along, idx, -1), axis=1) + 1
        return tf.cast(first, tf.float64), tf.cast(last, tf.float64)

    y1, y2 = edges(rows)
    x1, x2 = edges(cols)
    return tf.stack([x1, y1, x2, y2], axis=1)


class TfdsDecoder(Decoder):
    """Example dicts to examples; see `keras_solov2.data.from_tfds`.

    Args:
        dataset: `tf.data.Dataset` of (unbatched) example dicts.
        feature_map, mask_format, box_format, label_offset, on_empty,
        image_scale: as in `from_tfds`.
    """

    def __init__(
        self,
        dataset,
        feature_map=None,
        mask_format="stack",
        box_format="tfds",
        label_offset=0,
        on_empty="warn",
        image_scale=None,
    ):
        fmap = dict(DEFAULT_FEATURE_MAP)
        if feature_map:
            unknown = set(feature_map) - set(DEFAULT_FEATURE_MAP)
            if unknown:
                raise ValueError(
                    f"Unknown feature_map keys {sorted(unknown)}; expected some of "
                    f"{sorted(DEFAULT_FEATURE_MAP)}."
                )
            fmap.update(feature_map)
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"`mask_format` must be one of {MASK_FORMATS}.")
        if box_format not in BOX_FORMATS:
            raise ValueError(f"`box_format` must be one of {BOX_FORMATS}.")
        if on_empty not in ON_EMPTY:
            raise ValueError(f"`on_empty` must be one of {ON_EMPTY}.")
        if fmap["instance_ids"] is not None and mask_format != "id_image":
            raise ValueError(
                "feature_map['instance_ids'] needs mask_format='id_image'."
            )
        if image_scale is not None:
            image_scale = float(image_scale)
            if not image_scale > 0.0:
                raise ValueError(
                    f"`image_scale` must be > 0 (255.0 or 1.0), got {image_scale}."
                )
        self.dataset = dataset
        self.feature_map = fmap
        self.mask_format = mask_format
        self.box_format = box_format
        self.label_offset = label_offset
        self.on_empty = on_empty
        self.image_scale = image_scale

    def prepare(self, augment, options):
        self.max_instances = int(options.max_instances)

    def records(self, shuffle, options):
        return self.dataset, False

    def has_instances(self, example):
        return tf.reduce_any(self._instances(example)[0])

    def _feature(self, example, role):
        return _lookup(example, self.feature_map[role], role)

    def _image(self, example):
        image = self._feature(example, "image")
        if image.dtype == tf.string:
            image = decode_rgb(image)
        image = tf.ensure_shape(image, [None, None, 3])
        return _uint8_image(image, self.feature_map["image"], self.image_scale)

    def _instances(self, example, hw=None):
        """bool masks, labels, boxes (or `None`) of every instance, checked."""
        labels = tf.reshape(self._feature(example, "labels"), [-1])
        labels = tf.cast(labels, tf.int32) + self.label_offset
        ids = None
        if self.feature_map["instance_ids"] is not None:
            ids = tf.reshape(self._feature(example, "instance_ids"), [-1])
        masks = _instance_masks(
            self._feature(example, "masks"),
            self.mask_format,
            ids,
            tf.shape(labels, out_type=tf.int64)[0],
        )
        if hw is None:
            hw = tf.shape(masks)[1:3]
        h, w = hw[0], hw[1]
        n_all = tf.shape(labels)[0]
        checks = [
            tf.debugging.assert_equal(
                tf.shape(masks),
                tf.stack([n_all, h, w]),
                message="from_tfds: masks must be (N, h, w) with N = number of "
                "labels and (h, w) the image size",
            )
        ]
        boxes = None
        if self.feature_map["boxes"] is not None:
            boxes = tf.reshape(
                tf.cast(self._feature(example, "boxes"), tf.float64), [-1, 4]
            )
            checks.append(
                tf.debugging.assert_equal(
                    tf.shape(boxes)[0],
                    n_all,
                    message="from_tfds: one box per label is needed",
                )
            )
            if self.box_format == "tfds":
                hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
                boxes = tf.stack(
                    [
                        boxes[:, 1] * wf,
                        boxes[:, 0] * hf,
                        boxes[:, 3] * wf,
                        boxes[:, 2] * hf,
                    ],
                    axis=1,
                )
        with tf.control_dependencies(checks):
            masks = tf.identity(masks)
        nonempty = tf.reduce_any(masks, axis=[1, 2])
        return nonempty, masks, labels, boxes

    def decode(self, example, position):
        image = self._image(example)
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        nonempty, masks, labels, boxes = self._instances(example, (h, w))
        # Drop (and count) instances with empty masks, then truncate.
        num_empty = tf.shape(labels)[0] - tf.reduce_sum(tf.cast(nonempty, tf.int32))
        masks = tf.boolean_mask(masks, nonempty)
        labels = tf.boolean_mask(labels, nonempty)
        if boxes is not None:
            boxes = tf.boolean_mask(boxes, nonempty)
        else:
            boxes = _tight_boxes(masks)
        m = self.max_instances
        num_truncated = tf.maximum(tf.shape(labels)[0] - m, 0)
        with tf.control_dependencies([self._report(num_empty, position)]):
            h, w = tf.identity(h), tf.identity(w)
        return {
            "image": image,
            "height": h,
            "width": w,
            "index": position,
            "name": tf.constant("(from_tfds)"),
            "num_truncated": num_truncated,
            "num_empty": num_empty,
            "labels": labels[:m],
            "boxes": boxes[:m],
            "masks": masks[:m],
        }

    def _report(self, num_empty, position):
        """The `on_empty` report of the empty instances of one example."""
        if self.on_empty == "raise":
            return tf.debugging.assert_equal(
                num_empty,
                0,
                message="from_tfds: example has instances with empty masks "
                "(use on_empty='warn' to drop and report them)",
            )
        if self.on_empty == "warn":
            return tf.cond(
                num_empty > 0,
                lambda: tf.print(
                    "from_tfds: dropped",
                    num_empty,
                    "instance(s) with an empty mask in example",
                    position,
                    output_stream=sys.stderr,
                ),
                tf.no_op,
            )
        return tf.no_op()
