"""Sharded TFRecords of a `CocoDataset`, streamed back as SOLOv2 batches.

`write_tfrecords` stores one `tf.train.Example` per image (the encoded image
bytes as on disk and the already-validated, non-crowd instances, masks as
PNGs) in round-robin shards plus a `<prefix>.meta.json` sidecar.
`read_tfrecords` reads them (local paths or any `tf.io.gfile` URL such as
`gs://`) entirely in-graph and yields exactly the batches that
`CocoDataset.as_tf_dataset` yields for the same arguments.

Example features (`n` instances):

- `image`: bytes, the image file's bytes. `height`, `width`: int64, the
  displayed size. `orientation`: int64, the EXIF orientation to apply after
  decoding (1 = none; absent in format-1 files, read as 1).
- `file_name`: bytes. `image_id`: int64 (COCO id). `index`: int64, the
  image's position in the `CocoDataset` (seeds the random scale/flip draw).
- `labels`: int64 `(n,)`, contiguous labels.
- `boxes`: bytes, float64 little-endian `(n, 4)` `[x1, y1, x2, y2]` in
  original pixels (`x2 = x + w` of the annotation `bbox`); float64 so that
  boxes match `CocoDataset` bit for bit.
- `masks`: `n` bytes, each a PNG of the `(height, width, 1)` uint8 0/1 mask.
"""

import hashlib
import json
import os
import re
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_solov2.data.annotations import (
    instance_boxes,
    instance_masks,
    warn_truncation,
)
from keras_solov2.data.augmentation import Augmentation
from keras_solov2.data.batching import batch_examples
from keras_solov2.data.coco import CocoDataset
from keras_solov2.data.images import apply_orientation, decode_rgb
from keras_solov2.data.transforms import sample_masks
from keras_solov2.utils import image_geometry

FORMAT_VERSION = 2
_MAX_SHUFFLED_CYCLE = 16

_FEATURES = {
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


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def shard_paths(output_prefix: str, num_shards: int) -> list:
    """`<prefix>-00000-of-0000N.tfrecord` names of the shards."""
    return [
        f"{output_prefix}-{k:05d}-of-{num_shards:05d}.tfrecord"
        for k in range(num_shards)
    ]


def _metadata_path(output_prefix: str) -> str:
    return f"{output_prefix}.meta.json"


def _example(dataset: CocoDataset, index: int) -> tf.train.Example:
    record = dataset.image_record(index)
    instances = dataset.instances(index)
    h, w = record["height"], record["width"]
    with tf.io.gfile.GFile(record["path"], "rb") as f:
        raw = f.read()
    # Checks the bytes (raises naming the file) and reads the orientation.
    orientation = dataset.image_orientation(index, raw)
    pngs = []
    if instances:
        # The masks `CocoDataset` decodes (validated at construction).
        full = instance_masks(instances, h, w)  # (h, w, n)
        pngs = [
            tf.io.encode_png(np.ascontiguousarray(full[:, :, k : k + 1])).numpy()
            for k in range(full.shape[2])
        ]
    boxes = instance_boxes(instances)
    features = {
        "image": _bytes([raw]),
        "height": _ints([h]),
        "width": _ints([w]),
        "orientation": _ints([orientation]),
        "file_name": _bytes([record["file_name"].encode("utf-8")]),
        "image_id": _ints([record["id"]]),
        "index": _ints([index]),
        "labels": _ints([inst["label"] for inst in instances]),
        "boxes": _bytes([boxes.astype("<f8").tobytes()]),
        "masks": _bytes(pngs),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_tfrecords(
    dataset: CocoDataset,
    output_prefix: str,
    num_shards: int = 8,
    progress: bool = True,
) -> list:
    """Write `dataset` as sharded TFRecords plus a `<prefix>.meta.json` sidecar.

    Image `i` goes to shard `i % num_shards`, so reading the shards
    round-robin in name order (what `read_tfrecords` does when not
    shuffling) gives back the dataset order.

    Args:
        dataset: `CocoDataset`. Its kept (non-crowd, valid) instances are
            written, in json order.
        output_prefix: str. Path prefix (local or `tf.io.gfile` URL); shards
            are `<prefix>-00000-of-0000N.tfrecord`, metadata
            `<prefix>.meta.json` (not matched by the glob `<prefix>-*`).
        num_shards: int. Number of shard files. Defaults to `8`.
        progress: bool. Show a `keras.utils.Progbar`. Defaults to `True`.

    Returns:
        The shard paths, in order.
    """
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1, got {num_shards}.")
    output_prefix = str(output_prefix)
    parent = os.path.dirname(output_prefix)
    if parent:
        tf.io.gfile.makedirs(parent)
    paths = shard_paths(output_prefix, num_shards)
    counts = [0] * num_shards
    bar = keras.utils.Progbar(len(dataset), unit_name="image") if progress else None
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    complete = False
    try:
        for i in range(len(dataset)):
            writers[i % num_shards].write(_example(dataset, i).SerializeToString())
            counts[i % num_shards] += 1
            if bar is not None:
                bar.update(i + 1)
        complete = True
    finally:
        for writer in writers:
            writer.close()
        if not complete:  # No half-written shard set is left behind.
            for path in paths:
                if tf.io.gfile.exists(path):
                    tf.io.gfile.remove(path)
    metadata = {
        "format_version": FORMAT_VERSION,
        "class_names": dataset.class_names,
        "category_ids": dataset.category_ids,
        "num_images": len(dataset),
        "num_shards": num_shards,
        "shards": [os.path.basename(p) for p in paths],
        "examples_per_shard": counts,
        "sha256": [_sha256(p) for p in paths],
        "annotation_file": dataset.annotation_file,
        "stats": dataset.stats,
        "instances_per_image": _histogram(
            len(dataset.instances(i)) for i in range(len(dataset))
        ),
    }
    with tf.io.gfile.GFile(_metadata_path(output_prefix), "w") as f:
        json.dump(metadata, f, indent=1)
    return paths


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_tfrecords(output_prefix: str, progress: bool = True) -> dict:
    """Checks the shards written by `write_tfrecords` and names the bad ones.

    TensorFlow reports a damaged record as `DataLossError: corrupted record
    at <offset>`, without the file. This reads every shard listed in
    `<prefix>.meta.json` on its own: it must exist, have the sha256 recorded
    at write time (format 2), hold the recorded number of records, and every
    record must pass its CRC and parse.

    Args:
        output_prefix: str. The prefix given to `write_tfrecords`.
        progress: bool. Show a `keras.utils.Progbar` over the shards.

    Returns:
        `{shard file name: None or what is wrong}`.

    Raises:
        ValueError: listing every bad shard, if there is one.
    """
    output_prefix = str(output_prefix)
    metadata = read_tfrecord_metadata(output_prefix)
    folder = os.path.dirname(output_prefix)
    names = metadata["shards"]
    hashes = metadata.get("sha256") or [None] * len(names)
    bar = keras.utils.Progbar(len(names), unit_name="shard") if progress else None
    report = {}
    for k, (name, expected, digest) in enumerate(
        zip(names, metadata["examples_per_shard"], hashes, strict=True)
    ):
        path = os.path.join(folder, name) if folder else name
        problem = None
        if not tf.io.gfile.exists(path):
            problem = "missing"
        elif digest is not None and _sha256(path) != digest:
            problem = "sha256 differs from the one recorded at write time"
        if problem is None or problem.startswith("sha256"):
            count = 0
            try:
                for serialized in tf.data.TFRecordDataset(path):
                    tf.io.parse_single_example(serialized, _FEATURES)
                    count += 1
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
                detail = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", str(e)).strip()
                problem = f"record {count} is damaged ({detail})"
            else:
                if count != expected:
                    problem = f"{count} records, {expected} were written"
        report[name] = problem
        if bar is not None:
            bar.update(k + 1)
    bad = {name: problem for name, problem in report.items() if problem}
    if bad:
        lines = "\n".join(f"  {name}: {problem}" for name, problem in bad.items())
        raise ValueError(
            f"{len(bad)} of {len(names)} shard(s) of '{output_prefix}' are bad:\n"
            f"{lines}\nWrite them again with `keras-solov2 data to-tfrecord`."
        )
    return report


def _histogram(counts) -> dict:
    """`{str(count): number of images}`, json-friendly."""
    values, numbers = np.unique(np.fromiter(counts, np.int64), return_counts=True)
    return {str(int(v)): int(k) for v, k in zip(values, numbers, strict=True)}


def _warn_truncation(files, max_instances):
    """Warn, from the shards' `.meta.json`, about instances beyond the cap."""
    prefixes = set()
    for name in files:
        match = re.fullmatch(r"(.*)-\d{5}-of-\d{5}\.tfrecord", name)
        if match:
            prefixes.add(match.group(1))
    for prefix in sorted(prefixes):
        if not tf.io.gfile.exists(_metadata_path(prefix)):
            continue  # shards copied without their metadata: nothing to count
        histogram = read_tfrecord_metadata(prefix).get("instances_per_image")
        if histogram:  # format 2
            warn_truncation(histogram, max_instances, prefix, stacklevel=3)


def read_tfrecord_metadata(output_prefix: str) -> dict:
    """The `<prefix>.meta.json` written by `write_tfrecords`.

    Keys: `class_names` and `category_ids` (index = contiguous label),
    `num_images`, `num_shards`, `shards`, `examples_per_shard`,
    `annotation_file`, `stats` (the `CocoDataset.stats` at write time),
    `instances_per_image` (`{"count": images}`, format 2), `sha256` (one
    per shard, format 2; see `verify_tfrecords`) and `format_version`.
    """
    with tf.io.gfile.GFile(_metadata_path(str(output_prefix))) as f:
        return json.load(f)


def read_tfrecords(
    file_pattern: str | Sequence[str],
    batch_size: int,
    image_size: Sequence[int] | None = None,
    scales: Sequence[int] | Sequence[Sequence[int]] | None = None,
    max_instances: int = 100,
    training: bool = True,
    flip_probability: float = 0.5,
    shuffle: bool | None = None,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool = True,
    shuffle_buffer: int = 256,
    cache: bool | str = False,
    return_counts: bool = False,
    large_scale_jitter: Sequence[float] | None = None,
    keep_negatives: bool = True,
    input_context: tf.distribute.InputContext | None = None,
    size_divisor: int = image_geometry.SIZE_DIVISOR,
    mask_targets: str = "compact",
    aspect_ratio_grouping: bool = False,
) -> tf.data.Dataset:
    """Fixed-shape `(images, targets)` batches from `write_tfrecords` shards.

    Same transform, arguments and batch format as
    `CocoDataset.as_tf_dataset` (see there): `images` float32 `(B, H, W, 3)`
    (raw RGB on the 0..255 grid, padded with `image_geometry.PIXEL_MEAN`),
    `targets` with `masks` uint8 `(B, M, H, W)`, `labels` int32 `(B, M)`
    (`-1` padding) and `boxes` float32 `(B, M, 4)`. Decoding (image and PNG
    masks) and the geometry run in-graph. Without shuffling, the shards are
    read round-robin in name order, which restores the written order, so
    the batches equal `CocoDataset.as_tf_dataset`'s (with `training=True`
    and `shuffle=False` too: the scale/flip draws use the same seeds).

    Differences from `CocoDataset.as_tf_dataset`: shuffling uses the shard
    order plus a `shuffle_buffer` of records (not a full permutation); an
    image that does not fit the canvas, or whose decoded size differs from
    the stored one, fails when it is read rather than at construction.
    Truncation beyond `max_instances` is warned about from the shards'
    `.meta.json` (when it is next to them) and counted per example with
    `return_counts=True`. A damaged shard fails with TensorFlow's
    `DataLossError: corrupted record`, which names no file:
    `verify_tfrecords(prefix)` (or `keras-solov2 data verify PREFIX`) finds
    it.

    Args:
        file_pattern: str or list of str. Glob(s) of the shard files, e.g.
            `"gs://bucket/coco/train-*.tfrecord"`.
        batch_size, image_size, scales, max_instances, training,
        flip_probability, shuffle, seed, repeat, drop_remainder,
        large_scale_jitter, keep_negatives, size_divisor, mask_targets,
        aspect_ratio_grouping: as in
            `CocoDataset.as_tf_dataset` (`image_size=None` with `scales`:
            the square canvas that fits every scale).
        input_context: `tf.distribute.InputContext` or `None`. This input
            pipeline reads only its share: whole shard files when there are
            at least as many files as input pipelines, else every
            `num_input_pipelines`-th record. `batch_size` is then per
            replica. Defaults to `None`.
        shuffle_buffer: int. Records in the shuffle buffer when shuffling.
            Defaults to `256`.
        cache: bool or str. Keep the serialized records after the first
            pass: `True` in memory, a local path otherwise. Augmentation
            still changes every epoch, and so does the record order through
            `shuffle_buffer`, but the shard order stays that of the first
            epoch (uncached, each epoch shuffles the shards anew). Defaults
            to `False`.
        return_counts: bool. If `True`, elements are `(images, targets,
            counts)` with `counts["truncated"]` int32 `(B,)`: per example,
            the instances beyond `max_instances`.

    Returns:
        A `tf.data.Dataset` of `(images, targets)` (or `(images, targets,
        counts)`).
    """
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
    patterns = [file_pattern] if isinstance(file_pattern, str) else file_pattern
    matched = {p for pattern in patterns for p in tf.io.gfile.glob(pattern)}
    num_files = len(matched)
    if num_files == 0:
        raise ValueError(f"No TFRecord files match {file_pattern!r}.")
    _warn_truncation(matched, int(max_instances))
    shuffle = training if shuffle is None else shuffle
    m = int(max_instances)

    def load(serialized, random_seed):
        ex = tf.io.parse_single_example(serialized, _FEATURES)
        h = tf.cast(ex["height"], tf.int32)
        w = tf.cast(ex["width"], tf.int32)
        geometry = augment.draw(h, w, random_seed, ex["index"])
        image = apply_orientation(decode_rgb(ex["image"]), ex["orientation"])
        decoded_hw = tf.shape(image)[:2]
        checks = [
            tf.Assert(
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
        ]
        geometry = augment.checked(geometry, ex["file_name"], checks)
        image = augment.image(image, geometry)

        num_truncated = tf.maximum(
            tf.cast(ex["labels"].dense_shape[0], tf.int32) - m, 0
        )
        labels = tf.cast(tf.sparse.to_dense(ex["labels"])[:m], tf.int32)
        pngs = tf.sparse.to_dense(ex["masks"])[:m]
        boxes = tf.reshape(tf.io.decode_raw(ex["boxes"], tf.float64), [-1, 4])[:m]
        n = tf.shape(labels)[0]
        window = geometry["window"]

        def decode_mask(png):
            return tf.io.decode_png(png, channels=1, dtype=tf.uint8)[None, :, :, 0]

        masks = tf.cond(
            n > 0,
            lambda: tf.map_fn(
                lambda png: sample_masks(decode_mask(png), (h, w), geometry)[0],
                pngs,
                fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
            ),
            lambda: tf.zeros([0, window[0], window[1]], tf.uint8),
        )
        targets = augment.instances(masks, labels, boxes, (h, w), geometry)
        if return_counts:
            return image, targets, {"truncated": num_truncated}
        return image, targets

    files = tf.data.Dataset.list_files(
        file_pattern, shuffle=shuffle, seed=seed if shuffle else None
    )
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline = input_context.input_pipeline_id if input_context else 0
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
    if pipelines > 1 and not shard_files:
        records = records.shard(pipelines, pipeline)
    if not keep_negatives:
        labels_only = {"labels": _FEATURES["labels"]}
        records = records.filter(
            lambda s: tf.size(tf.io.parse_single_example(s, labels_only)["labels"]) > 0
        )
    if cache:
        records = records.cache("" if cache is True else str(cache))
    if shuffle:
        records = records.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    return batch_examples(
        records,
        load,
        batch_size,
        seed,
        repeat,
        drop_remainder,
        augment.aspect_ratio_grouping,
    )
