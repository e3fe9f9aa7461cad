"""SOLOv2 training batches from any tfds-style dataset of instance masks.

`from_tfds` maps a `tf.data.Dataset` of example dicts (the layout
`tensorflow_datasets` produces: an `image` plus a nested `objects` dict of
per-instance features) to the same fixed-shape `(images, targets)` batches as
`CocoDataset.as_tf_dataset` and `read_tfrecords`, entirely in-graph.
`tensorflow_datasets` itself is not needed: any dataset of such dicts works.
"""

from collections.abc import Sequence

import tensorflow as tf

from keras_solov2.data.decoders.tfds import (
    BOX_FORMATS,
    DEFAULT_FEATURE_MAP,
    MASK_FORMATS,
    ON_EMPTY,
    TfdsDecoder,
)
from keras_solov2.data.options import PipelineOptions
from keras_solov2.data.reader import build_dataset

__all__ = [
    "BOX_FORMATS",
    "DEFAULT_FEATURE_MAP",
    "MASK_FORMATS",
    "ON_EMPTY",
    "from_tfds",
]


def from_tfds(
    dataset: tf.data.Dataset,
    feature_map: dict | None = None,
    batch_size: int = 2,
    canvas: Sequence[int] | None = None,
    scales: Sequence[int] | Sequence[Sequence[int]] | None = None,
    *,
    mask_format: str = "stack",
    box_format: str = "tfds",
    label_offset: int = 0,
    on_empty: str = "warn",
    image_scale: float | None = None,
    **options,
) -> tf.data.Dataset:
    """SOLOv2 `(images, targets)` batches from a tfds-style dataset.

    Per example, an in-graph decoder (`decoders.tfds.TfdsDecoder`), then the
    pipeline of every source (`reader.build_dataset`, which describes the
    batches), so the batches equal `CocoDataset.as_tf_dataset`'s for the
    same images in the same order. The first `M = max_instances` non-empty
    instances of an example are kept, in dataset order.

    Shuffling: by default (`shuffle_buffer=None`) the examples are taken in
    `dataset` order. With `shuffle_buffer=n`, they go through
    `shuffle(n, seed=seed, reshuffle_each_iteration=True)`: a new order every
    epoch, the same sequence of orders for the same `seed`. A buffer at least
    as large as the dataset gives a full permutation; a smaller one only
    mixes nearby examples (also shuffle the files, e.g. `tfds.load(...,
    shuffle_files=True)`, which has its own seed in `read_config`). The
    random scale/flip draw of the `i`-th example (counted after shuffling)
    depends only on `seed`, the iteration and `i`, so the batches are
    deterministic given `seed` and the input order.

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

        batch_size: int. Defaults to `2`.
        canvas: `(H, W)` or `None`. Defaults to `None`.
        scales: `(long, short)` pair(s) or `None`. Defaults to `None`.
        **options: the other options. All of them are documented once,
            in `keras_solov2.data.PipelineOptions`.
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

    Returns:
        A `tf.data.Dataset` of `(images, targets)` (or `(images, targets,
        counts)`).

    Raises:
        ValueError: for an unknown `feature_map` key, `mask_format`,
            `box_format` or `on_empty`, a float image without `image_scale`
            (or `image_scale` for a non-float one), or a bad option.
        KeyError: if a `feature_map` path is not in the examples.

    Example:
    >>> import tensorflow_datasets as tfds
    >>> raw = tfds.load("my_instances", split="train", shuffle_files=True)
    >>> ds = keras_solov2.data.from_tfds(
    ...     raw, batch_size=8, scales=[(512, 352), (512, 320)],
    ...     shuffle_buffer=1000, seed=1, label_offset=-1)
    """
    options = PipelineOptions.from_kwargs(
        batch_size=batch_size, canvas=canvas, scales=scales, **options
    )
    decoder = TfdsDecoder(
        dataset,
        feature_map,
        mask_format=mask_format,
        box_format=box_format,
        label_offset=label_offset,
        on_empty=on_empty,
        image_scale=image_scale,
    )
    return build_dataset(decoder, options)
