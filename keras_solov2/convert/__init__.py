"""Checkpoint conversion from mmdetection / original SOLO SOLOv2 checkpoints."""

from keras_solov2.convert.mmdet_keys import load_mmdet_state_dict, normalize_key

__all__ = ["load_mmdet_state_dict", "normalize_key"]
