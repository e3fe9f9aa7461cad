"""Decoder of `write_tfrecords` shards: one `tf.train.Example` per image.

Example features (`n` instances):

- `image`: bytes, the image file's bytes. `height`, `width`: int64, the
  displayed size. `orientation`: int64, the EXIF orientation to apply after
  decoding (1 = none; absent in format-1 files, read as 1).
- `file_name`: bytes. `image_id`: int64 (COCO id). `index`: int64, the
  image's position in the `CocoDataset` (the key of its random draws).
- `labels`: int64 `(n,)`, contiguous labels.
- `boxes`: bytes, float64 little-endian `(n, 4)` `[x1, y1, x2, y2]` in
  original pixels (`x2 = x + w` of the annotation `bbox`); float64 so that
  boxes match `CocoDataset` bit for bit.
- `masks`: `n` bytes, each a PNG of the `(height, width, 1)` uint8 0/1 mask.
"""

import json
import re

import tensorflow as tf

from keras_solov2.data.annotations import warn_truncation
from keras_solov2.data.decoders.base import Decoder
from keras_solov2.data.images import apply_orientation, decode_rgb
from keras_solov2.data.transforms import sample_masks

FORMAT_VERSION = 2
DEFAULT_SHUFFLE_BUFFER = 256
_MAX_SHUFFLED_CYCLE = 16

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "orientation": tf.io.FixedLenFeature([], tf.int64, default_value=1),
    "file_name": tf.io.FixedLenFeature([], tf.string),
    "image_id": tf.io.FixedLenFeature([], tf.int64),
    "index": tf.io.FixedLenFeature([], tf.int64),
    "labels": tf.io.VarLenFeature(tf.int64),
    "boxes": tf.io.FixedLenFeature([], tf.string),
    "masks": tf.io.VarLenFeature(tf.string),
}


def metadata_path(output_prefix: str) -> str:
    return f"{output_prefix}.meta.json"


def read_tfrecord_metadata(output_prefix: str) -> dict:
    """The `<prefix>.meta.json` written by `write_tfrecords`.

    Keys: `class_names` and `category_ids` (index = contiguous label),
    `num_images`, `num_shards`, `shards`, `examples_per_shard`,
    `annotation_file`, `stats` (the `CocoDataset.stats` at write time),
    `instances_per_image` (`{"count": images}`, format 2), `sha256` (one
    per shard, format 2; see `verify_tfrecords`) and `format_version`.
    """
    with tf.io.gfile.GFile(metadata_path(str(output_prefix))) as f:
        return json.load(f)


class TFRecordDecoder(Decoder):
    """The records of TFRecord shards, read in-graph.

    Without shuffling, the shards are read round-robin in name order, which
    restores the written order. Shuffling shuffles the shard order too. With
    an `input_context`, each input pipeline reads whole shard files when
    there are at least as many as pipelines, else every
    `num_input_pipelines`-th record.

    Args:
        file_pattern: str or list of str. Glob(s) of the shard files.
    """

    def __init__(self, file_pattern):
        self.file_pattern = file_pattern

    def prepare(self, augment, options):
        """Finds the shards; warns (from `.meta.json`) about truncation."""
        pattern = self.file_pattern
        patterns = [pattern] if isinstance(pattern, str) else pattern
        matched = {p for pattern in patterns for p in tf.io.gfile.glob(pattern)}
        if not matched:
            raise ValueError(f"No TFRecord files match {pattern!r}.")
        self.num_files = len(matched)
        self.max_instances = int(options.max_instances)
        prefixes = set()
        for name in matched:
            match = re.fullmatch(r"(.*)-\d{5}-of-\d{5}\.tfrecord", name)
            if match:
                prefixes.add(match.group(1))
        for prefix in sorted(prefixes):
            if not tf.io.gfile.exists(metadata_path(prefix)):
                continue  # shards copied without their metadata: nothing to count
            histogram = read_tfrecord_metadata(prefix).get("instances_per_image")
            if histogram:  # format 2
                warn_truncation(histogram, self.max_instances, prefix, stacklevel=4)

    def shuffle_buffer(self, options):
        return DEFAULT_SHUFFLE_BUFFER

    def records(self, shuffle, options):
        files = tf.data.Dataset.list_files(
            self.file_pattern, shuffle=shuffle, seed=options.seed if shuffle else None
        )
        context, num_files = options.input_context, self.num_files
        pipelines = context.num_input_pipelines if context else 1
        pipeline = context.input_pipeline_id if context else 0
        shard_files = pipelines > 1 and num_files >= pipelines
        if shard_files:  # Same seed everywhere: the same order, disjoint shares.
            files = files.shard(pipelines, pipeline)
            num_files = len(range(pipeline, num_files, pipelines))
        records = files.interleave(
            tf.data.TFRecordDataset,
            # All shards at once restores the round-robin written order.
            cycle_length=min(num_files, _MAX_SHUFFLED_CYCLE) if shuffle else num_files,
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return records, shard_files

    def has_instances(self, serialized):
        labels = {"labels": FEATURES["labels"]}
        return tf.size(tf.io.parse_single_example(serialized, labels)["labels"]) > 0

    def decode(self, serialized, position):
        ex = tf.io.parse_single_example(serialized, FEATURES)
        h = tf.cast(ex["height"], tf.int32)
        w = tf.cast(ex["width"], tf.int32)
        image = apply_orientation(decode_rgb(ex["image"]), ex["orientation"])
        decoded_hw = tf.shape(image)[:2]
        check = tf.Assert(
            tf.reduce_all(tf.equal(decoded_hw, tf.stack([h, w]))),
            [
                "Image",
                ex["file_name"],
                "decodes to",
                decoded_hw,
                "but its TFRecord says",
                h,
                w,
            ],
        )
        with tf.control_dependencies([check]):
            h, w = tf.identity(h), tf.identity(w)
        m = self.max_instances
        num_instances = tf.cast(ex["labels"].dense_shape[0], tf.int32)
        boxes = tf.reshape(tf.io.decode_raw(ex["boxes"], tf.float64), [-1, 4])
        return {
            "image": image,
            "height": h,
            "width": w,
            "index": ex["index"],
            "name": ex["file_name"],
            "num_truncated": tf.maximum(num_instances - m, 0),
            "num_empty": tf.constant(0, tf.int32),
            "labels": tf.cast(tf.sparse.to_dense(ex["labels"])[:m], tf.int32),
            "boxes": boxes[:m],
            "masks": tf.sparse.to_dense(ex["masks"])[:m],  # PNGs, decoded lazily
        }

    def instances(self, example, geometry):
        """Decodes the PNG masks one at a time, each resampled at once."""
        hw = (example["height"], example["width"])
        pngs, window = example["masks"], geometry["window"]

        def decode_mask(png):
            return tf.io.decode_png(png, channels=1, dtype=tf.uint8)[None, :, :, 0]

        masks = tf.cond(
            tf.size(pngs) > 0,
            lambda: tf.map_fn(
                lambda png: sample_masks(decode_mask(png), hw, geometry)[0],
                pngs,
                fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
            ),
            lambda: tf.zeros([0, window[0], window[1]], tf.uint8),
        )
        return masks, example["labels"], example["boxes"]
