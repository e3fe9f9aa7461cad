"""Datasets for keras-solov2: COCO json, TFRecord shards and tfds, one pipeline.

Each source has a decoder (`keras_solov2.data.decoders`) and one pipeline
does the rest (`keras_solov2.data.reader.build_dataset`), with the same
options everywhere (`PipelineOptions`).
"""

from keras_solov2.data.coco import CocoDataset, load_coco
from keras_solov2.data.options import PipelineOptions
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
    "PipelineOptions",
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
