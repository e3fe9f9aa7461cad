"""Maps mmdetection 2.x/3.x SOLOv2 state-dict keys onto a `keras_solov2.SOLOv2`.

Every tensor of the checkpoint is accounted for: a key that maps nowhere, a
model weight that no key fills, or a shape that disagrees is an error naming
the key. `num_batches_tracked` counters are the only keys that are dropped,
and they are reported.
"""

import re

import numpy as np

BN_FIELDS = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
GN_FIELDS = {"weight": "gamma", "bias": "beta"}

# Original WXinlong/SOLO names -> mmdetection names (reference §7.4).
LEGACY_RENAMES = (
    (re.compile(r"^bbox_head\.cate_convs\."), "mask_head.cls_convs."),
    (re.compile(r"^bbox_head\.kernel_convs\."), "mask_head.kernel_convs."),
    (re.compile(r"^bbox_head\.solo_cate\."), "mask_head.conv_cls."),
    (re.compile(r"^bbox_head\.solo_kernel\."), "mask_head.conv_kernel."),
    (
        re.compile(r"^mask_feat_head\.conv_pred\.0\."),
        "mask_head.mask_feature_head.conv_pred.",
    ),
    (re.compile(r"^mask_feat_head\."), "mask_head.mask_feature_head."),
)


def normalize_key(key):
    """Strips `module.` prefixes and renames original-SOLO keys to mmdet's."""
    if key.startswith("module."):
        key = key[len("module.") :]
    for pattern, replacement in LEGACY_RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return key


def _conv_kernel(array):
    return np.transpose(array, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def target_variables(model):
    """`{mmdet_key: keras_variable}` for every weight of `model`."""
    backbone = model.backbone
    targets = {}

    def conv(key, layer, bias=False):
        targets[f"{key}.weight"] = (layer.kernel, _conv_kernel)
        if bias:
            targets[f"{key}.bias"] = (layer.bias, None)

    def norm(key, layer, fields):
        for torch_name, keras_name in fields.items():
            targets[f"{key}.{torch_name}"] = (getattr(layer, keras_name), None)

    def conv_module(key, layer):  # ConvGNReLU <-> mmcv ConvModule(conv, gn)
        conv(f"{key}.conv", layer.conv)
        norm(f"{key}.gn", layer.gn, GN_FIELDS)

    for layer in backbone.layers:
        name = layer.name
        if not name.startswith("backbone_") or not layer.weights:
            continue
        torch_key = "backbone." + _backbone_key(name[len("backbone_") :])
        if hasattr(layer, "moving_mean"):
            norm(torch_key, layer, BN_FIELDS)
        else:
            conv(torch_key, layer)
    neck = backbone.get_layer("neck")
    for i, layer in enumerate(neck.lateral_convs):
        conv(f"neck.lateral_convs.{i}.conv", layer, bias=True)
    for i, layer in enumerate(neck.fpn_convs):
        conv(f"neck.fpn_convs.{i}.conv", layer, bias=True)
    head = backbone.get_layer("mask_head")
    for i, layer in enumerate(head.cls_convs):
        conv_module(f"mask_head.cls_convs.{i}", layer)
    for i, layer in enumerate(head.kernel_convs):
        conv_module(f"mask_head.kernel_convs.{i}", layer)
    conv("mask_head.conv_kernel", head.conv_kernel, bias=True)
    conv("mask_head.conv_cls", model.get_layer("conv_cls"), bias=True)
    features = backbone.get_layer("mask_feature_head")
    prefix = "mask_head.mask_feature_head"
    for level, convs in enumerate(features.level_convs):
        for j, layer in enumerate(convs):
            conv_module(f"{prefix}.convs_all_levels.{level}.conv{j}", layer)
    conv_module(f"{prefix}.conv_pred", features.conv_pred)
    return targets


def _backbone_key(name):
    # conv1 / bn1 / layer2_0_conv1 / layer2_0_downsample_0 -> torch names.
    match = re.fullmatch(r"layer(\d+)_(\d+)_(.+)", name)
    if not match:
        return name
    stage, block, rest = match.groups()
    rest = rest.replace("downsample_", "downsample.")
    return f"layer{stage}.{block}.{rest}"


def load_mmdet_state_dict(model, state_dict, progress=False):
    """Assigns an mmdet SOLOv2 state dict (`{key: numpy array}`) to `model`.

    Args:
        model: `keras_solov2.SOLOv2` whose architecture matches the checkpoint.
        state_dict: mapping of mmdet (or original SOLO) keys to arrays.
        progress: bool. Show a progress bar. Defaults to `False`.

    Returns:
        dict with `"assigned"` (count) and `"ignored"` (the dropped
        `num_batches_tracked` keys).

    Raises:
        ValueError: naming every unexpected key, missing key and shape
            mismatch.
    """
    targets = target_variables(model)
    ignored, unexpected, mismatched, done = [], [], [], set()
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(state_dict), unit_name="tensor")
    for index, (raw_key, array) in enumerate(state_dict.items()):
        if bar is not None:
            bar.update(index + 1)
        key = normalize_key(raw_key)
        if key.endswith("num_batches_tracked"):
            ignored.append(raw_key)
            continue
        if key not in targets:
            unexpected.append(raw_key)
            continue
        variable, transform = targets[key]
        value = np.asarray(array)
        if transform is not None:
            value = transform(value)
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(
                f"{raw_key}: checkpoint {tuple(np.shape(array))} vs model "
                f"{tuple(variable.shape)} ({variable.path})"
            )
            continue
        variable.assign(value.astype(variable.dtype))
        done.add(key)
    missing = sorted(set(targets) - done)
    problems = []
    if unexpected:
        problems.append(f"unexpected keys: {sorted(unexpected)}")
    if missing:
        problems.append(f"keys missing from the checkpoint: {missing}")
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched))
    if problems:
        raise ValueError(
            "The checkpoint does not match the model architecture. "
            + " | ".join(problems)
        )
    return {"assigned": len(done), "ignored": ignored}
