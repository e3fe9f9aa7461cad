"""Decoders: each source's records to the per-image example of the pipeline.

`CocoJsonDecoder` (a `CocoDataset`'s json and image files), `TFRecordDecoder`
(`write_tfrecords` shards) and `TfdsDecoder` (tfds-style example dicts) feed
`keras_solov2.data.reader.build_dataset`; see `Decoder` for the example.
"""

from keras_solov2.data.decoders.base import Decoder
from keras_solov2.data.decoders.coco_json import CocoJsonDecoder
from keras_solov2.data.decoders.tfds import TfdsDecoder
from keras_solov2.data.decoders.tfrecord import TFRecordDecoder

__all__ = ["CocoJsonDecoder", "Decoder", "TFRecordDecoder", "TfdsDecoder"]
