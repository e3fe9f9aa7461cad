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
    metadata when present; names whose count differs from the classifier's
    are left out with a warning naming the file.

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
    class_names = _class_names(meta, num_classes, checkpoint_path)
    model = SOLOv2.from_preset(
        architecture,
        load_weights=False,
        num_classes=num_classes,
        class_names=class_names,
    )
    load_mmdet_state_dict(model, state, progress=progress)
    return model


def _class_names(meta, num_classes, checkpoint_path):
    """The class names of the checkpoint's metadata, or `None` with a warning.

    mmdetection 3.x keeps them in `meta["dataset_meta"]["classes"]`, 2.x and
    the original SOLO in `meta["CLASSES"]`.
    """
    if not isinstance(meta, dict):
        return None
    dataset_meta = meta.get("dataset_meta")
    names = dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None
    if names is None:
        names = meta.get("CLASSES")
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(
        isinstance(n, str) for n in names
    ):
        warnings.warn(
            f"{checkpoint_path}: the class names in the checkpoint's metadata are "
            f"{names!r:.100}, not a list of strings; the converted model has no "
            "class_names.",
            stacklevel=3,
        )
        return None
    if len(names) != num_classes:
        warnings.warn(
            f"{checkpoint_path}: the checkpoint's metadata lists {len(names)} class "
            f"names but its classifier has {num_classes} classes; the converted "
            "model has no class_names. Pass the right ones with "
            "`keras_solov2.SOLOv2.from_preset(preset_dir, class_names=[...])`.",
            stacklevel=3,
        )
        return None
    return list(names)
