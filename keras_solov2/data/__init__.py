"""Datasets for keras-solov2: COCO reader, TFRecord shards, tfds and shapes."""

from keras_solov2.data.coco import CocoDataset, load_coco
from keras_solov2.data.shapes import (
    SHAPE_NAMES,
    generate_shapes_dataset,
    render_shapes_image,
)
from keras_solov2.data.tfds import from_tfds
from keras_solov2.data.tfrecord import (
    read_tfrecord_metadata,
    read_tfrecords,
    verify_tfrecords,
    write_tfrecords,
)

__all__ = [
    "CocoDataset",
    "SHAPE_NAMES",
    "from_tfds",
    "generate_shapes_dataset",
    "load_coco",
    "read_tfrecord_metadata",
    "read_tfrecords",
    "render_shapes_image",
    "verify_tfrecords",
    "write_tfrecords",
]
