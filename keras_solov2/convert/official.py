"""The official checkpoints behind the COCO presets: download, check, convert, cache.

`SOLOv2.from_preset("r50_coco")` asks the checkpoint loader registered here
(`keras_solov2.models.preset_loader.register_checkpoint_loader`) for the
converted preset directory. The models never import this module: conversion
sits above the model.
"""

import os

from keras_solov2.convert.mmdet import from_mmdet
from keras_solov2.models import preset_loader, preset_utils


def official_preset_dir(name, spec):
    """The converted preset directory of checkpoint preset `name`.

    The first call downloads `spec["url"]` into the cache (checked against
    its sha256), converts it and saves the preset atomically; later calls
    return the cached directory.

    Args:
        name: str. The preset name, e.g. `"r50_coco"`.
        spec: dict. Its entry of `keras_solov2.SOLOv2.presets`.

    Returns:
        The path of the preset directory.
    """
    root = preset_utils.cache_dir()
    preset_dir = os.path.join(root, "presets", name)
    if preset_utils.is_preset_dir(preset_dir):
        return preset_dir
    checkpoint = os.path.join(root, "downloads", spec["url"].rsplit("/", 1)[-1])
    preset_utils.download(
        spec["url"],
        checkpoint,
        sha256=spec.get("sha256"),
        sha256_prefix=spec.get("sha256_prefix"),
    )
    model = from_mmdet(checkpoint, architecture=spec["architecture"])
    model.class_names = list(spec["class_names"])
    if spec.get("category_ids") is not None:
        model.category_ids = [int(i) for i in spec["category_ids"]]
    metadata = {
        "preset": name,
        "source_url": spec["url"],
        "source_sha256": preset_utils.sha256sum(checkpoint),
        "coco_mask_ap": spec.get("coco_mask_ap"),
        "description": spec.get("description"),
    }
    staging = preset_dir + ".partial"
    model.save_to_preset(staging, metadata=metadata)
    os.replace(staging, preset_dir)
    return preset_dir


preset_loader.register_checkpoint_loader(official_preset_dir)
