"""SOLOv2 training batches from any tfds-style dataset of instance masks.

`from_tfds` maps a `tf.data.Dataset` of example dicts (the layout
`tensorflow_datasets` produces: an `image` plus a nested `objects` dict of
per-instance features) to the same fixed-shape `(images, targets)` batches as
`CocoDataset.as_tf_dataset` and `read_tfrecords`, entirely in-graph.
`tensorflow_datasets` itself is not needed: any dataset of such dicts works.
"""

import numbers
import sys
from collections.abc import Sequence

import tensorflow as tf

from keras_solov2.data.augmentation import Augmentation
from keras_solov2.data.batching import batch_by_canvas
from keras_solov2.data.images import decode_rgb
from keras_solov2.data.transforms import sample_masks
from keras_solov2.utils import image_geometry

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


def from_tfds(
    dataset: tf.data.Dataset,
    feature_map: dict | None = None,
    batch_size: int = 2,
    image_size: Sequence[int] | None = None,
    scales: Sequence[int] | Sequence[Sequence[int]] | None = None,
    max_instances: int = 100,
    training: bool = True,
    flip_probability: float = 0.5,
    seed: int = 0,
    shuffle_buffer: int | None = None,
    mask_format: str = "stack",
    box_format: str = "tfds",
    label_offset: int = 0,
    on_empty: str = "warn",
    return_counts: bool = False,
    repeat: bool = False,
    drop_remainder: bool = True,
    large_scale_jitter: Sequence[float] | None = None,
    image_scale: float | None = None,
    size_divisor: int = image_geometry.SIZE_DIVISOR,
    mask_targets: str = "compact",
    aspect_ratio_grouping: bool = False,
) -> tf.data.Dataset:
    """SOLOv2 `(images, targets)` batches from a tfds-style dataset.

    Per example, the same transform as `CocoDataset.as_tf_dataset`: keep-ratio
    resize to the canvas (`scales=None`) or to a `(long, short)` scale drawn at
    random when training, random horizontal flip, padding at the bottom/right
    with `image_geometry.PIXEL_MEAN` (no normalisation: the model does it);
    masks follow with the pixel-centre nearest-neighbour resize. The batch
    format is identical: `images` float32 `(B, H, W, 3)`, raw RGB on the
    0..255 grid;
    `targets` with `masks` uint8 `(B, M, H, W)`, `labels` int32 `(B, M)`
    (`-1` padding) and `boxes` float32 `(B, M, 4)` `[x1, y1, x2, y2]` in
    canvas pixels (zero padding). The first `M = max_instances` non-empty
    instances of an example are kept, in dataset order.

    Shuffling: with `shuffle_buffer=None` (default) the examples are taken in
    `dataset` order. With `shuffle_buffer=n`, they first go through
    `dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)`: a new
    order every epoch (iteration), the same sequence of orders for the same
    `seed`. A buffer at least as large as the dataset gives a full
    permutation; a smaller one only mixes nearby examples (also shuffle the
    files, e.g. `tfds.load(..., shuffle_files=True)`, which has its own
    seed in `read_config`). The random scale/flip draw of the `i`-th example
    (counted after shuffling) depends only on `seed`, the iteration and `i`,
    so the batches are deterministic given `seed` and the input order.

    Empty instances: an instance whose mask (at the original resolution) has
    no pixel is dropped. It is never dropped silently: with
    `on_empty="warn"` (default) every example with empty instances prints a
    line to stderr (`tf.print`, naming the example by its position after
    shuffling); `"raise"` fails with an
    `InvalidArgumentError` instead; `"ignore_but_count"` prints nothing. The
    numbers are always available with `return_counts=True`. As in
    `CocoDataset`, a mask that only becomes empty after a strong down-scale
    is kept.

    Args:
        dataset: `tf.data.Dataset` of (unbatched) example dicts.
        feature_map: dict naming where each feature is; nested dicts are
            addressed with `/` (e.g. `"objects/mask"`). Keys (missing keys
            take the defaults):

            - `"image"`: `(h, w, 3)` RGB image: uint8 (or another integer
              type) with values 0..255, float with `image_scale`, or
              encoded image bytes (a scalar string, decoded like
              `CocoDataset` does but as stored, without EXIF orientation,
              as `tfds` decodes). Default `"image"`.
            - `"masks"`: with `mask_format="stack"`, the `(N, h, w)` or
              `(N, h, w, 1)` per-instance masks (any dtype; nonzero = inside);
              with `mask_format="id_image"`, one `(h, w)` / `(h, w, 1)`
              instance-id image (`0` = background) or an `(h, w, 3)` RGB
              encoded one (`id = R + 256 G + 256^2 B`, COCO panoptic PNGs).
              Default `"objects/mask"`.
            - `"labels"`: int `(N,)` per-instance class labels. The target
              label is `label + label_offset`; the results must be the
              contiguous `0..K-1` the model was built for. Default
              `"objects/label"`.
            - `"boxes"`: optional `(N, 4)` boxes (see `box_format`). `None`
              (default): tight boxes `[x1, y1, x2 + 1, y2 + 1]` (pixel
              edges) derived from the masks.
            - `"instance_ids"`: only for `mask_format="id_image"`: int `(N,)`
              id of each instance in the id image. `None` (default): instance
              `k` (0-based, in label order) has id `k + 1`.

        batch_size, image_size, scales, max_instances, training,
        flip_probability, seed, repeat, drop_remainder, large_scale_jitter,
        size_divisor, mask_targets, aspect_ratio_grouping: as in
            `CocoDataset.as_tf_dataset`
            (`image_size=None` with `scales`: the square canvas that fits
            every scale; without `scales` it must be given).
        shuffle_buffer: int >= 1 or `None`. Size of the shuffle buffer the
            examples go through before anything else (seeded with `seed`,
            reshuffled every epoch); `None` (default): no shuffling. See
            above.
        mask_format: `"stack"` or `"id_image"`; see `feature_map`.
        box_format: `"tfds"`: normalised `[ymin, xmin, ymax, xmax]` (the
            `tfds.features.BBoxFeature` convention); `"xyxy"`: `[x1, y1, x2,
            y2]` in original-image pixels. Only used when
            `feature_map["boxes"]` is set.
        label_offset: int added to every label (e.g. `-1` for 1-based labels).
        image_scale: float or `None`. Required for float images, refused
            for the others: the value of full intensity, `255.0` for floats
            on the 0..255 scale, `1.0` for floats in `[0, 1]`. The image is
            multiplied by `255 / image_scale` and rounded to uint8 (a float
            image made from uint8 gives the uint8 image's batches); a value
            outside `[0, image_scale]` fails when read. Defaults to `None`.
        on_empty: `"warn"`, `"raise"` or `"ignore_but_count"`; see above.
        return_counts: bool. If `True`, elements are `(images, targets,
            counts)` with `counts["empty_dropped"]` and `counts["truncated"]`
            int32 `(B,)`: per example, the instances dropped for an empty mask
            and those beyond `max_instances`.

    Returns:
        A `tf.data.Dataset` of `(images, targets)` (or `(images, targets,
        counts)`).

    Raises:
        ValueError: for an unknown `feature_map` key, `mask_format`,
            `box_format` or `on_empty`, a bad `shuffle_buffer`, a float
            image without `image_scale` (or `image_scale` for a non-float
            one), or batching arguments as in `CocoDataset.as_tf_dataset`.
        KeyError: if a `feature_map` path is not in the examples.

    Example:
    >>> import tensorflow_datasets as tfds
    >>> raw = tfds.load("my_instances", split="train", shuffle_files=True)
    >>> ds = from_tfds(raw, batch_size=8, scales=[(512, 352), (512, 320)],
    ...                shuffle_buffer=1000, seed=1, label_offset=-1)
    """
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
    if shuffle_buffer is not None and (
        isinstance(shuffle_buffer, bool)
        or not isinstance(shuffle_buffer, numbers.Integral)
        or shuffle_buffer < 1
    ):
        raise ValueError(
            f"`shuffle_buffer` must be an int >= 1 or None, got {shuffle_buffer!r}."
        )
    if fmap["instance_ids"] is not None and mask_format != "id_image":
        raise ValueError("feature_map['instance_ids'] needs mask_format='id_image'.")
    augment = Augmentation.from_args(
        image_size,
        batch_size,
        max_instances,
        flip_probability,
        scales,
        large_scale_jitter,
        training,
        size_divisor,
        mask_targets,
        aspect_ratio_grouping,
    )
    if image_scale is not None:
        image_scale = float(image_scale)
        if not image_scale > 0.0:
            raise ValueError(
                f"`image_scale` must be > 0 (255.0 or 1.0), got {image_scale}."
            )
    m = int(max_instances)

    def load(index, example, random_seed):
        image = _lookup(example, fmap["image"], "image")
        if image.dtype == tf.string:
            image = decode_rgb(image)
        image = _uint8_image(
            tf.ensure_shape(image, [None, None, 3]), fmap["image"], image_scale
        )
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        labels = tf.reshape(_lookup(example, fmap["labels"], "labels"), [-1])
        labels = tf.cast(labels, tf.int32) + label_offset
        ids = None
        if fmap["instance_ids"] is not None:
            ids = tf.reshape(
                _lookup(example, fmap["instance_ids"], "instance_ids"), [-1]
            )
        masks = _instance_masks(
            _lookup(example, fmap["masks"], "masks"),
            mask_format,
            ids,
            tf.shape(labels, out_type=tf.int64)[0],
        )
        n_all = tf.shape(labels)[0]
        checks = [
            tf.debugging.assert_equal(
                tf.shape(masks),
                tf.stack([n_all, h, w]),
                message="from_tfds: masks must be (N, h, w) with N = number of "
                "labels and (h, w) the image size",
            )
        ]
        if fmap["boxes"] is not None:
            boxes = tf.reshape(
                tf.cast(_lookup(example, fmap["boxes"], "boxes"), tf.float64),
                [-1, 4],
            )
            checks.append(
                tf.debugging.assert_equal(
                    tf.shape(boxes)[0],
                    n_all,
                    message="from_tfds: one box per label is needed",
                )
            )
            if box_format == "tfds":
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

        # Drop (and count) instances with empty masks, then truncate.
        nonempty = tf.reduce_any(masks, axis=[1, 2])
        num_empty = n_all - tf.reduce_sum(tf.cast(nonempty, tf.int32))
        masks = tf.boolean_mask(masks, nonempty)
        labels = tf.boolean_mask(labels, nonempty)
        if fmap["boxes"] is not None:
            boxes = tf.boolean_mask(boxes, nonempty)
        else:
            boxes = _tight_boxes(masks)
        n_kept = tf.shape(labels)[0]
        num_truncated = tf.maximum(n_kept - m, 0)
        masks, labels, boxes = masks[:m], labels[:m], boxes[:m]

        if on_empty == "raise":
            report = tf.debugging.assert_equal(
                num_empty,
                0,
                message="from_tfds: example has instances with empty masks "
                "(use on_empty='warn' to drop and report them)",
            )
        elif on_empty == "warn":
            report = tf.cond(
                num_empty > 0,
                lambda: tf.print(
                    "from_tfds: dropped",
                    num_empty,
                    "instance(s) with an empty mask in example",
                    index,
                    output_stream=sys.stderr,
                ),
                tf.no_op,
            )
        else:
            report = tf.no_op()

        geometry = augment.draw(h, w, random_seed, index)
        geometry = augment.checked(geometry, "(from_tfds)", [report])
        image = augment.image(image, geometry)
        masks = tf.cast(sample_masks(masks, (h, w), geometry), tf.uint8)
        targets = augment.instances(masks, labels, boxes, (h, w), geometry)
        if return_counts:
            counts = {"empty_dropped": num_empty, "truncated": num_truncated}
            return image, targets, counts
        return image, targets

    if shuffle_buffer is not None:
        # Before `enumerate`, so that the draws follow the shuffled position.
        dataset = dataset.shuffle(
            int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True
        )
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((dataset.enumerate(), randoms))
    if repeat:
        ds = ds.repeat()
    ds = ds.map(
        lambda indexed, r: load(indexed[0], indexed[1], r),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = batch_by_canvas(ds, batch_size, drop_remainder, augment.aspect_ratio_grouping)
    return ds.prefetch(tf.data.AUTOTUNE)
