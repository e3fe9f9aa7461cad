"""The task's sublayers that hold settings, and the construction helpers of
`keras_solov2.SOLOv2`.

`SETTING_LAYERS` is the one place where each setting lives: the image
converter's, the target encoder's and the decoder's `SETTINGS`. `SOLOv2`
forwards them as its own attributes (`forward_settings`), builds the
sublayers from its keyword settings or takes them built (`sublayer`), and
rebuilds its train, test and predict functions when one of them changed
(`settings_fingerprint`).
"""

import keras

from keras_solov2.models import preset_loader
from keras_solov2.models.solov2.solov2_decoder import SOLOv2Decoder
from keras_solov2.models.solov2.solov2_image_converter import SOLOv2ImageConverter
from keras_solov2.models.solov2.solov2_presets import FULL_SCALE_RANGES
from keras_solov2.models.solov2.solov2_target_encoder import SOLOv2TargetEncoder

# The sublayers that hold settings, by attribute name.
SETTING_LAYERS = {
    "image_converter": SOLOv2ImageConverter,
    "target_encoder": SOLOv2TargetEncoder,
    "decoder": SOLOv2Decoder,
}


class classproperty:
    """A read-only property of the class (`SOLOv2.presets`)."""

    def __init__(self, getter):
        self.getter = getter

    def __get__(self, instance, owner):
        return self.getter(owner)


def forward_settings(cls):
    """Class decorator: every sublayer setting as a property of `cls`
    (`model.score_threshold` is `model.decoder.score_threshold`)."""
    for name, layer in SETTING_LAYERS.items():
        for setting in layer.SETTINGS:
            setattr(cls, setting, _forwarded(name, setting))
    return cls


def settings_names():
    """Every sublayer setting that the model forwards, e.g. `"test_scale"`."""
    return frozenset(
        name for layer in SETTING_LAYERS.values() for name in layer.SETTINGS
    )


def pop_settings(kwargs):
    """`{sublayer: {setting: value}}`, the settings popped from `kwargs`."""
    return {
        name: {k: kwargs.pop(k) for k in list(kwargs) if k in layer.SETTINGS}
        for name, layer in SETTING_LAYERS.items()
    }


def build_sublayers(backbone, settings, **given):
    """`{name: layer}` for every name of `SETTING_LAYERS`: `given[name]` (a
    layer or its config) or one built from `settings[name]`, whose
    `num_grids` and `mask_stride` are the backbone's."""
    grids = {"num_grids": backbone.num_grids, "mask_stride": backbone.mask_stride}
    required = {
        "image_converter": {},
        "target_encoder": {**grids, "scale_ranges": FULL_SCALE_RANGES},
        "decoder": grids,
    }
    layers = {
        name: sublayer(name, given.get(name), settings, required[name])
        for name in SETTING_LAYERS
    }
    for name in ("target_encoder", "decoder"):
        if tuple(layers[name].num_grids) != tuple(backbone.num_grids):
            raise ValueError(
                f"The {name}'s num_grids {layers[name].num_grids} differ "
                f"from the backbone's {backbone.num_grids}."
            )
        if layers[name].mask_stride != backbone.mask_stride:
            raise ValueError(
                f"The {name}'s mask_stride {layers[name].mask_stride} differs "
                f"from the backbone's {backbone.mask_stride}."
            )
    return layers


def settings_fingerprint(model):
    """A string that changes when a setting that the traced train, test or
    predict functions read changes."""
    return repr(
        [getattr(model, name).settings() for name in SETTING_LAYERS]
        + [model.focal_alpha, model.focal_gamma, model.mask_loss_weight]
        + [model.loss_normalization]
    )


def sublayer(name, given, settings, required):
    """The sublayer `name`: `given` (a layer or a config) or one built from
    the constructor's keyword settings."""
    own = settings[name]
    if given is None:
        # float32 whatever the policy: targets, decoding and Matrix NMS.
        layer_class = SETTING_LAYERS[name]
        return layer_class(**{**required, **own}, dtype="float32", name=name)
    if own:
        raise ValueError(
            f"Pass either `{name}` or its settings {sorted(own)}, not both; "
            f"set them on the layer instead (`{name}.{next(iter(own))} = ...`)."
        )
    if isinstance(given, dict):
        given = keras.layers.deserialize(given)
    if not isinstance(given, SETTING_LAYERS[name]):
        raise ValueError(
            f"`{name}` must be a {SETTING_LAYERS[name].__name__}, got "
            f"{type(given).__name__}."
        )
    return given


def backbone_with_policy(backbone, dtype):
    """`(backbone, policy)`: the backbone's own policy when `dtype` is `None`,
    else `dtype`'s, with the backbone rebuilt under it (weights copied) when
    it was built with another."""
    if dtype is None:
        return backbone, backbone.dtype_policy
    policy = keras.dtype_policies.get(dtype)
    if policy.name == backbone.dtype_policy.name:
        return backbone, policy
    config = {**backbone.get_config(), "dtype": keras.dtype_policies.serialize(policy)}
    rebuilt = type(backbone).from_config(config)
    preset_loader.copy_weights(backbone, rebuilt, {"dtype": policy.name})
    return rebuilt, policy


def check_per_class(argument, values, num_classes):
    if values is not None and len(values) != num_classes:
        raise ValueError(
            f"`{argument}` has {len(values)} entries but num_classes={num_classes}."
        )


def _forwarded(layer_name, setting):
    def get(self):
        return getattr(getattr(self, layer_name), setting)

    def set_(self, value):
        setattr(getattr(self, layer_name), setting, value)

    return property(get, set_, doc=f"`{layer_name}.{setting}` (see its docstring).")
