"""Checkpoint conversion from mmdetection / original SOLO SOLOv2 checkpoints."""

from keras_solov2.convert.mmdet import from_mmdet
from keras_solov2.convert.mmdet_keys import load_mmdet_state_dict, normalize_key
from keras_solov2.convert.official import official_preset_dir
from keras_solov2.convert.torch_checkpoint import load_state_dict, read_torch_checkpoint

__all__ = [
    "from_mmdet",
    "load_mmdet_state_dict",
    "load_state_dict",
    "normalize_key",
    "official_preset_dir",
    "read_torch_checkpoint",
]
