"""Building a SOLOv2 from a preset: names, directories, overrides, fine-tuning.

`SOLOv2.from_preset` resolves its argument here, in three steps:

1. `resolve`: a preset directory, a checkpoint preset (`"r50_coco"`) or an
   architecture (`"light_r18"`);
2. for a checkpoint preset with weights, the converted preset directory comes
   from the checkpoint loader that `keras_solov2.convert` registers (download,
   sha256 check, conversion, cache). The models package never imports the
   converter: conversion sits above the model, as in KerasHub;
3. `with_overrides`: keyword overrides and a new classifier, keeping every
   pretrained weight that still fits (the fine-tuning path).
"""

import inspect
import os

from keras_solov2.models import preset_utils
from keras_solov2.models.solov2 import solov2_presets
from keras_solov2.models.solov2.solov2_backbone import SOLOv2Backbone

BACKBONE_ARGS = frozenset(
    name
    for name, parameter in inspect.signature(SOLOv2Backbone.__init__).parameters.items()
    if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
)

_checkpoint_loader = None


def register_checkpoint_loader(loader):
    """Sets the function `loader(name, spec) -> preset_dir` for checkpoint presets.

    `keras_solov2.convert` registers its download-convert-cache function when
    it is imported (which `import keras_solov2` does).
    """
    global _checkpoint_loader
    _checkpoint_loader = loader


def checkpoint_preset_dir(name):
    """The converted preset directory of an official checkpoint preset."""
    if _checkpoint_loader is None:
        raise RuntimeError(
            f"Loading the weights of '{name}' needs the checkpoint converter: "
            "`import keras_solov2.convert` (done by `import keras_solov2`)."
        )
    return _checkpoint_loader(name, solov2_presets.PRESETS[name])


def split_backbone_args(kwargs):
    """`(backbone_kwargs, other_kwargs)` of a flat dict of overrides."""
    backbone = {k: v for k, v in kwargs.items() if k in BACKBONE_ARGS}
    return backbone, {k: v for k, v in kwargs.items() if k not in BACKBONE_ARGS}


def known_presets():
    return sorted(solov2_presets.PRESETS) + sorted(solov2_presets.ARCHITECTURES)


def from_preset(cls, preset, load_weights=True, num_classes=None, **overrides):
    """See `SOLOv2.from_preset`."""
    if isinstance(preset, (str, os.PathLike)) and os.path.isdir(preset):
        model = preset_utils.load_preset_dir(preset, load_weights=load_weights)
        return with_overrides(model, num_classes, overrides)
    if preset in solov2_presets.PRESETS:
        spec = solov2_presets.PRESETS[preset]
        # The checkpoint's own recipe (a cached conversion may predate it, or
        # hold its architecture's scales).
        if spec.get("train_scales") is not None:
            overrides = {"train_scales": spec["train_scales"], **overrides}
        if load_weights:
            model = preset_utils.load_preset_dir(checkpoint_preset_dir(preset))
            _fill_dataset_metadata(model, spec)
            return with_overrides(model, num_classes, overrides)
        architecture = spec["architecture"]
        names, ids = spec["class_names"], spec.get("category_ids")
    elif preset in solov2_presets.ARCHITECTURES:
        if load_weights:
            raise ValueError(
                f"'{preset}' is an architecture without weights; pass "
                "load_weights=False, or use a checkpoint preset such as "
                f"'{preset}_coco'."
            )
        architecture, names, ids = preset, None, None
    else:
        raise ValueError(
            f"Unknown SOLOv2 preset {preset!r}: not a preset name or a preset "
            f"directory. Known presets: {known_presets()}."
        )
    arch = solov2_presets.ARCHITECTURES[architecture]
    backbone_kwargs, task_kwargs = split_backbone_args(overrides)
    backbone_kwargs = {**arch["backbone"], **backbone_kwargs}
    task_kwargs = {**arch["task"], **task_kwargs}
    if num_classes is None:
        num_classes = task_kwargs.pop("num_classes", 80)
    elif names is not None and num_classes != len(names):
        names = ids = None  # a new classifier: the COCO names no longer apply
    task_kwargs.setdefault("class_names", names)
    task_kwargs.setdefault("category_ids", ids)
    return cls(
        backbone=SOLOv2Backbone(**backbone_kwargs),
        num_classes=num_classes,
        **task_kwargs,
    )


def _fill_dataset_metadata(model, spec):
    """Gives a cached checkpoint preset the preset's class names and ids.

    Presets converted by older versions kept no `category_ids`; the official
    checkpoints are COCO models, so their ids are the preset's.
    """
    if model.num_classes != spec["num_classes"]:
        return
    if model.class_names is None:
        model.class_names = list(spec["class_names"])
    if model.category_ids is None and spec.get("category_ids") is not None:
        model.category_ids = [int(i) for i in spec["category_ids"]]


def with_overrides(model, num_classes, overrides):
    """A model with `overrides` applied and, optionally, a new classifier.

    Settings of the image converter, target encoder and decoder are set on
    the model itself (they take effect at the next call). Any other override,
    or a different `num_classes`, builds a new model from the config, into
    which every pretrained weight is copied; only the classifier `conv_cls`
    may change shape.

    Raises:
        ValueError: if an override changes the shape of a pretrained weight.
    """
    settings = {k: v for k, v in overrides.items() if k in type(model).settings_names()}
    structural = {k: v for k, v in overrides.items() if k not in settings}
    new_head = num_classes is not None and num_classes != model.num_classes
    if new_head or structural:
        model = _rebuilt(model, num_classes if new_head else None, structural)
    for key, value in settings.items():
        setattr(model, key, value)
    return model


def _rebuilt(model, num_classes, overrides):
    config = model.get_config()
    backbone_overrides, task_overrides = split_backbone_args(overrides)
    backbone_config = {**config["backbone"]["config"], **backbone_overrides}
    config.update(task_overrides)
    if num_classes is not None:
        config["num_classes"] = num_classes
        for key in ("class_names", "category_ids"):
            if key not in overrides:
                config[key] = None
    if "dtype" in overrides:  # the backbone's and the task's policy alike
        config["dtype"] = overrides["dtype"]
    config["backbone"] = SOLOv2Backbone(**backbone_config)
    new = type(model).from_config(config)
    copy_weights(model.backbone, new.backbone, overrides)
    if num_classes is None:
        new.get_layer("conv_cls").set_weights(model.get_layer("conv_cls").get_weights())
    return new


def copy_weights(source_model, target_model, overrides):
    """Assigns every weight of `source_model` to `target_model` (the same
    architecture, rebuilt with `overrides`); refuses a changed shape."""
    sources, targets = source_model.weights, target_model.weights
    if len(sources) != len(targets):
        raise ValueError(
            f"Cannot keep the pretrained weights: the overrides {sorted(overrides)} "
            f"change the backbone from {len(sources)} to {len(targets)} weights. "
            "Only the classifier may change."
        )
    for source, target in zip(sources, targets, strict=True):
        if tuple(source.shape) != tuple(target.shape):
            raise ValueError(
                f"Cannot keep the pretrained weight {source.path} "
                f"{tuple(source.shape)}: the overrides {sorted(overrides)} change "
                f"it to {tuple(target.shape)}. Only the classifier may change."
            )
        target.assign(source)


def resolve(cls, spec, on_random_weights=None, **overrides):
    """A model from a preset directory, a checkpoint preset (its official
    weights) or an architecture name (random init).

    The one resolution of a `--model`-style argument (the CLI, training).
    An unknown name is a `ValueError` listing the known ones. For an
    architecture, `on_random_weights(message)` is called, if given (the CLI
    prints the message: exporting or evaluating random weights is rarely
    what was meant).
    """
    spec = str(spec)
    if os.path.isdir(spec):
        return cls.from_preset(spec, **overrides)
    names = known_presets()
    if spec not in names:
        raise ValueError(
            f"{spec!r} is neither a preset directory nor a preset name "
            f"({', '.join(names)})."
        )
    if spec in solov2_presets.PRESETS:
        return cls.from_preset(spec, **overrides)
    if on_random_weights is not None:
        on_random_weights(
            f"{spec!r} is an architecture: its weights are random. Use a trained "
            "preset directory, a .keras file or a *_coco preset."
        )
    return cls.from_preset(spec, load_weights=False, **overrides)
