"""Datasets for keras-solov2: COCO reader and synthetic shapes generator."""

from keras_solov2.data.coco import CocoDataset, load_coco
from keras_solov2.data.shapes import (
    SHAPE_NAMES,
    generate_shapes_dataset,
    render_shapes_image,
)

__all__ = [
    "CocoDataset",
    "SHAPE_NAMES",
    "generate_shapes_dataset",
    "load_coco",
    "render_shapes_image",
]
