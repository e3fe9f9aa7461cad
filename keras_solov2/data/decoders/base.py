"""`Decoder`: what a source provides to the one input pipeline."""

import tensorflow as tf

from keras_solov2.data.transforms import sample_masks


class Decoder:
    """One source's records, decoded into the per-image example.

    `keras_solov2.data.reader.build_dataset` calls, in order: `prepare` once
    (checks that need the whole source), `records` (the source's records in
    order, this input pipeline's share when it can shard them itself),
    `has_instances` (with `keep_negatives=False`), `read` (if any) and, per image in
    the map, `decode` and `instances`. Everything else (sharding, caching,
    shuffling, random draws, augmentation, targets, batching) is the
    pipeline's, the same for every source.

    The example `decode` returns is a dict of tensors:

    - `image`: uint8 `(h, w, 3)`, RGB as displayed (orientation applied).
    - `height`, `width`: int32 scalars, the size the source states (its
      checks run before anything uses them).
    - `index`: int64 scalar, the key of the image's random draws.
    - `name`: string scalar, the image's name in error messages.
    - `num_truncated`, `num_empty`: int32 scalars, instances beyond
      `max_instances` and instances left out for an empty mask.
    - `labels` int32 `(n,)`, `boxes` float64 `(n, 4)` `[x1, y1, x2, y2]` in
      original pixels and `masks` `(n, h, w)`, `n <= max_instances`, unless
      the decoder's `instances` makes them itself.
    """

    def prepare(self, augment, options):
        """Checks before reading; `augment` is the checked `Augmentation`."""

    def records(self, shuffle, options):
        """`(records, sharded)`: the source's records in order.

        `sharded` says that they are already this input pipeline's share
        (`options.input_context`); if not, the pipeline shards them.
        """
        raise NotImplementedError

    def shuffle_buffer(self, options):
        """The default shuffle buffer, `None` to keep the order by default."""
        return None

    def has_instances(self, record):
        """bool scalar: the record has instances (`keep_negatives=False`)."""
        raise NotImplementedError

    # `read(record)`: what is cached of a record (e.g. a file's bytes), or
    # `None` to cache the records themselves.
    read = None

    def decode(self, record, position):
        """The example of one record (`position`: its place in the stream)."""
        raise NotImplementedError

    def instances(self, example, geometry):
        """`(masks, labels, boxes)` with the masks resampled to the window.

        `masks` uint8 `(n, wh, ww)` (`transforms.sample_masks`).
        """
        hw = (example["height"], example["width"])
        masks = tf.cast(sample_masks(example["masks"], hw, geometry), tf.uint8)
        return masks, example["labels"], example["boxes"]
