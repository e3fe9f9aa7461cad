"""Datasets for keras-solov2: COCO reader, TFRecord shards and synthetic shapes."""

from keras_solov2.data.coco import CocoDataset, load_coco
from keras_solov2.data.shapes import (
    SHAPE_NAMES,
    generate_shapes_dataset,
    render_shapes_image,
)
from keras_solov2.data.tfrecord import (
    read_tfrecord_metadata,
    read_tfrecords,
    write_tfrecords,
)

__all__ = [
    "CocoDataset",
    "SHAPE_NAMES",
    "generate_shapes_dataset",
    "load_coco",
    "read_tfrecord_metadata",
    "read_tfrecords",
    "render_shapes_image",
    "write_tfrecords",
]
