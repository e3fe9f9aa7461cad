"""Sharded TFRecords of a `CocoDataset`, streamed back as SOLOv2 batches.

`write_tfrecords` stores one `tf.train.Example` per image (the encoded image
bytes as on disk and the already-validated, non-crowd instances, masks as
PNGs; the features are listed in `keras_solov2.data.decoders.tfrecord`) in
round-robin shards plus a `<prefix>.meta.json` sidecar. `read_tfrecords`
reads them (local paths or any `tf.io.gfile` URL such as `gs://`) entirely
in-graph and yields exactly the batches that `CocoDataset.as_tf_dataset`
yields for the same options.
"""

import hashlib
import json
import os
import re
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_solov2.data.annotations import instance_boxes, instance_masks
from keras_solov2.data.coco import CocoDataset
from keras_solov2.data.decoders.tfrecord import (
    FEATURES,
    FORMAT_VERSION,
    TFRecordDecoder,
    metadata_path,
    read_tfrecord_metadata,
)
from keras_solov2.data.options import PipelineOptions
from keras_solov2.data.reader import build_dataset


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
    with tf.io.gfile.GFile(metadata_path(output_prefix), "w") as f:
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
                    tf.io.parse_single_example(serialized, FEATURES)
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


def read_tfrecords(
    file_pattern: str | Sequence[str],
    batch_size: int = 2,
    canvas: Sequence[int] | None = None,
    scales: Sequence[int] | Sequence[Sequence[int]] | None = None,
    **options,
) -> tf.data.Dataset:
    """Fixed-shape `(images, targets)` batches from `write_tfrecords` shards.

    The pipeline of every source (`reader.build_dataset`, which describes the
    batches) after an in-graph decoder (image, PNG masks). Without shuffling,
    the shards are read round-robin in name order, which restores the written
    order, so the batches equal `CocoDataset.as_tf_dataset`'s for the same
    options (with `training=True` and `shuffle=False` too: the draws use the
    same keys, the images' positions in the dataset).

    Differences from `CocoDataset.as_tf_dataset`: shuffling shuffles the
    shard order plus a `shuffle_buffer` of records (256 by default, not a
    full permutation; with `cache`, the shard order stays that of the first
    epoch); with `input_context`, each input pipeline reads whole shard
    files when there are at least as many as pipelines; an image that does
    not fit the canvas, or whose decoded size differs from the stored one,
    fails when it is read rather than before. Truncation beyond
    `max_instances` is warned about from the shards' `.meta.json` (when it
    is next to them). A damaged shard fails with TensorFlow's `DataLossError:
    corrupted record`, which names no file: `verify_tfrecords(prefix)` (or
    `keras-solov2 data verify PREFIX`) finds it.

    Args:
        file_pattern: str or list of str. Glob(s) of the shard files, e.g.
            `"gs://bucket/coco/train-*.tfrecord"`.
        batch_size: int. Defaults to `2`.
        canvas: `(H, W)` or `None`. Defaults to `None`.
        scales: `(long, short)` pair(s) or `None`. Defaults to `None`.
        **options: the other options. All of them are documented once,
            in `keras_solov2.data.PipelineOptions`.

    Returns:
        A `tf.data.Dataset` of `(images, targets)` (or `(images, targets,
        counts)` with `return_counts=True`).
    """
    options = PipelineOptions.from_kwargs(
        batch_size=batch_size, canvas=canvas, scales=scales, **options
    )
    return build_dataset(TFRecordDecoder(file_pattern), options)
