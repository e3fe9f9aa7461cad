"""Converts official mmdetection / SOLO SOLOv2 checkpoints into Keras models."""

import warnings

import numpy as np

from keras_solov2.convert.mmdet_keys import load_mmdet_state_dict, normalize_key
from keras_solov2.convert.torch_checkpoint import load_state_dict


def from_mmdet(checkpoint_path, architecture="r50", progress=True):
    """Builds a `keras_solov2.SOLOv2` from an mmdetection SOLOv2 checkpoint.

    The checkpoint is read without torch and without executing pickle code
    (`keras_solov2.convert.torch_checkpoint`). Keys of mmdetection 2.x/3.x and
    of the original WXinlong/SOLO code are accepted. The number of classes is
    read from the classifier, and the class names from the checkpoint's
    metadata when present.

    Args:
        checkpoint_path: str. A `.pth` file.
        architecture: str. `"r50"`, `"r101"`, `"light_r18"`, `"light_r34"` or
            `"light_r50"`. Defaults to `"r50"`.
        progress: bool. Show a progress bar. Defaults to `True`.

    Returns:
        A `keras_solov2.SOLOv2` with the checkpoint's weights.

    Raises:
        ValueError: naming every missing, unexpected or mis-shaped key.

    Example:
    >>> model = keras_solov2.convert.from_mmdet("solov2_r50.pth", architecture="r50")
    """
    from keras_solov2.models.solov2 import SOLOv2

    state, meta, refused = load_state_dict(checkpoint_path)
    if refused:
        warnings.warn(
            f"{checkpoint_path}: metadata objects of types {sorted(set(refused))} were "
            "not loaded (only tensors and plain containers are read).",
            stacklevel=2,
        )
    classifier = [k for k in state if normalize_key(k) == "mask_head.conv_cls.weight"]
    if not classifier:
        raise ValueError(
            f"{checkpoint_path}: no classifier weight (mask_head.conv_cls.weight or "
            "bbox_head.solo_cate.weight); is this a SOLOv2 checkpoint?"
        )
    num_classes = int(np.shape(state[classifier[0]])[0])
    class_names = _class_names(meta, num_classes)
    model = SOLOv2.from_preset(
        architecture,
        load_weights=False,
        num_classes=num_classes,
        class_names=class_names,
    )
    load_mmdet_state_dict(model, state, progress=progress)
    return model


def _class_names(meta, num_classes):
    if not isinstance(meta, dict):
        return None
    names = meta.get("dataset_meta", {}).get("classes") or meta.get("CLASSES")
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    return None
