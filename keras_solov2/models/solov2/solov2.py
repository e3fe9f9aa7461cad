import math

import keras
import numpy as np

from keras_solov2.layers.pixel_normalization import PixelNormalization
from keras_solov2.models import preset_loader, preset_utils
from keras_solov2.models.solov2 import solov2_predict, solov2_presets
from keras_solov2.models.solov2.solov2_decoder import SOLOv2Decoder
from keras_solov2.models.solov2.solov2_image_converter import SOLOv2ImageConverter
from keras_solov2.models.solov2.solov2_loss import check_targets, solov2_loss
from keras_solov2.models.solov2.solov2_target_encoder import SOLOv2TargetEncoder
from keras_solov2.optimizers import solov2_optimizer

# The sublayers that hold settings, by attribute name: the one place where
# each setting lives. `SOLOv2` forwards their settings as its own attributes.
_SETTING_LAYERS = {
    "image_converter": SOLOv2ImageConverter,
    "target_encoder": SOLOv2TargetEncoder,
    "decoder": SOLOv2Decoder,
}


class _classproperty:
    def __init__(self, getter):
        self.getter = getter

    def __get__(self, instance, owner):
        return self.getter(owner)


@keras.saving.register_keras_serializable(package="keras_solov2")
class SOLOv2(keras.Model):
    """SOLOv2 instance segmentation: a backbone, a classifier, losses, decoding.

    Every entry point takes raw RGB images on the 0..255 scale (uint8 or
    float): `fit`, `evaluate`, `predict` and `model(images)`. The graph
    normalises them first (`keras_solov2.layers.PixelNormalization`), then
    maps them to dense outputs: `category_logits` `(batch, cells,
    num_classes)`, `kernels` `(batch, cells, E)` and `mask_features`
    `(batch, H/4, W/4, E)`.

    Training: `model.compile()` (the official SGD recipe by default) then
    `model.fit(dataset)`, where the dataset yields `(images, targets)`:
    `images` `(batch, H, W, 3)` already resized and padded to a canvas whose
    sides are multiples of `size_divisor` (the readers in
    `keras_solov2.data` pad with `PIXEL_MEAN`, which the normalisation turns
    into mmdetection's zero padding), and `targets` a dict with `"masks"`
    `(batch, M, H, W)`, `"labels"` `(batch, M)` (`-1` for padding slots) and
    `"boxes"` `(batch, M, 4)`; or, as the readers ship them by default, the
    masks in compact form (`"mask_targets"` at stride 4, `"mask_centers"`,
    `"mask_areas"`; see `keras_solov2.data.transforms.compact_mask_targets`),
    which give the same loss from 1/16 of the bytes. The loss is built in
    (`keras_solov2.models.solov2.solov2_loss`): focal loss on the category grid
    plus 3 x dice loss on the masks of the positive cells. Keras logs `loss`,
    `category_loss`, `mask_loss` and `positives_overflow`.

    Inference: `model.predict(images)` takes `(batch, H, W, 3)` images of any
    size (or a list of images of different sizes). The `image_converter`
    resizes them to `test_scale` keeping the aspect ratio and pads them; the
    network runs; the `decoder` (point NMS, dynamic masks, maskness, Matrix
    NMS) returns a dict of `masks` `(batch, max_detections, H, W)` bool at
    the original size, `labels` (int32, `-1` for padding), `scores` (`0` for
    padding), `boxes` `(batch, D, 4)` `[x1, y1, x2, y2]` derived from the
    masks, `num_detections` and `candidates_overflow`. Only the kept
    detections are resized to the original size, a few at a time, so a large
    photo costs little beyond its masks. With `model.mask_resolution =
    "features"` it returns `mask_probs` at 1/4 of the padded input instead of
    `masks` (what an exported model returns);
    `keras_solov2.layers.paste_masks` turns them into the same masks.

    Settings live in three serialised sublayers, each listing them in its
    `SETTINGS`: `image_converter` (`test_scale`, `size_divisor`),
    `target_encoder` (`scale_ranges`, `center_sigma`, `max_positives`,
    `train_scales`) and `decoder` (`score_threshold`, `max_detections`,
    `nms_sigma`, ...). The model forwards them: `model.score_threshold = 0.3`
    sets the decoder's, and the next `predict` uses it (the model rebuilds
    its train, test and predict functions when a setting changed). They may
    also be given to the constructor as keyword arguments.

    Args:
        backbone: `keras_solov2.models.SOLOv2Backbone`.
        num_classes: int. Defaults to `80`.
        class_names: optional list of `num_classes` names. Defaults to `None`.
        category_ids: optional list of the dataset's category ids, one per
            contiguous label (e.g. `CocoDataset.category_ids`), so that
            predicted labels map back to the original ids. Defaults to `None`.
        prior_probability: float. Initial classifier probability. Defaults to
            `0.01`.
        focal_alpha: float. Defaults to `0.25`.
        focal_gamma: float. Defaults to `2.0`.
        mask_loss_weight: float. Defaults to `3.0`.
        loss_normalization: `"global"` or `"per_replica"`. How the loss is
            normalised under `tf.distribute` (one device: the same). With
            `"global"`, `num_pos` (the focal-loss and mask-loss divisor) is
            summed over the replicas, so that N replicas give the loss and
            the update of one device on the same global batch (batch
            statistics of training-mode BatchNorm stay per replica, as
            without SyncBN). `"per_replica"` normalises each replica by its
            own positives and averages the replicas, as mmdetection's
            multi-GPU training does. Defaults to `"global"`.
        image_converter: optional `SOLOv2ImageConverter` (or its config).
            Defaults to one built from the keyword settings.
        target_encoder: optional `SOLOv2TargetEncoder` (or its config).
        decoder: optional `SOLOv2Decoder` (or its config).
        **kwargs: settings of the three sublayers (e.g. `test_scale=None`,
            `scale_ranges=...`, `score_threshold=0.3`), then `keras.Model`
            keyword arguments. `dtype` (e.g. `"mixed_bfloat16"`,
            `"mixed_float16"`) is the network's dtype policy; without it the
            backbone's. A backbone built with another policy is rebuilt
            under this one, its weights kept. The losses, the target encoder,
            the decoder and Matrix NMS always compute in float32; with
            `"mixed_float16"`, `compile` wraps the optimizer in Keras'
            `LossScaleOptimizer`.

    Example:
    >>> model = keras_solov2.SOLOv2.from_preset(
    ...     "light_r18_coco", load_weights=False, num_classes=3)
    >>> model.compile()
    >>> outputs = model.predict(np.zeros((1, 240, 320, 3), "uint8"))
    >>> model.score_threshold = 0.3  # the next predict keeps fewer masks

    Reference: Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation",
    NeurIPS 2020, arXiv 2003.10152.
    """

    def __init__(
        self,
        backbone,
        num_classes=80,
        class_names=None,
        category_ids=None,
        prior_probability=0.01,
        focal_alpha=0.25,
        focal_gamma=2.0,
        mask_loss_weight=3.0,
        loss_normalization="global",
        image_converter=None,
        target_encoder=None,
        decoder=None,
        **kwargs,
    ):
        _check_per_class("class_names", class_names, num_classes)
        _check_per_class("category_ids", category_ids, num_classes)
        settings = {
            attribute: {
                k: kwargs.pop(k) for k in list(kwargs) if k in layer_class.SETTINGS
            }
            for attribute, layer_class in _SETTING_LAYERS.items()
        }
        backbone, dtype = _backbone_with_policy(backbone, kwargs.pop("dtype", None))
        images = keras.Input(shape=backbone.image_shape, name="images")
        normalized = PixelNormalization(dtype=dtype, name="pixel_normalization")(images)
        features = backbone(normalized)
        conv_cls = keras.layers.Conv2D(
            num_classes,
            3,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant(
                -math.log((1 - prior_probability) / prior_probability)
            ),
            dtype=dtype,
            name="conv_cls",
        )
        logits = [
            keras.layers.Reshape(
                (s * s, num_classes), dtype=dtype, name=f"category_logits_{i}"
            )(conv_cls(x))
            for i, (s, x) in enumerate(
                zip(backbone.num_grids, features["category_features"], strict=True)
            )
        ]
        outputs = {
            "category_logits": keras.layers.Concatenate(
                axis=1, dtype=dtype, name="category_logits"
            )(logits),
            "kernels": features["kernels"],
            "mask_features": features["mask_features"],
        }
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        # A functional model drops `dtype`: its compile (loss scaling with
        # "mixed_float16") and get_config read the policy from here.
        self.dtype_policy = dtype
        self.backbone = backbone
        self.num_classes = num_classes
        self.class_names = None if class_names is None else list(class_names)
        self.category_ids = (
            None if category_ids is None else [int(i) for i in category_ids]
        )
        self.prior_probability = prior_probability
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_loss_weight = mask_loss_weight
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"`loss_normalization` must be one of {LOSS_NORMALIZATIONS}; got "
                f"{loss_normalization!r}."
            )
        self.loss_normalization = loss_normalization
        grids = {"num_grids": backbone.num_grids}
        self.image_converter = _sublayer(
            "image_converter", image_converter, settings, {}
        )
        self.target_encoder = _sublayer(
            "target_encoder",
            target_encoder,
            settings,
            {**grids, "scale_ranges": solov2_presets.FULL_SCALE_RANGES},
        )
        self.decoder = _sublayer("decoder", decoder, settings, grids)
        for name in ("target_encoder", "decoder"):
            if tuple(getattr(self, name).num_grids) != tuple(backbone.num_grids):
                raise ValueError(
                    f"The {name}'s num_grids {getattr(self, name).num_grids} differ "
                    f"from the backbone's {backbone.num_grids}."
                )
        self.category_loss_tracker = keras.metrics.Mean(name="category_loss")
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")
        self.positives_overflow_tracker = keras.metrics.Sum(name="positives_overflow")
        self._traced_settings = {}

    @classmethod
    def settings_names(cls):
        """Every sublayer setting that the model forwards, e.g. `"test_scale"`."""
        return frozenset(
            name for layer in _SETTING_LAYERS.values() for name in layer.SETTINGS
        )

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer="auto", loss=None, **kwargs):
        """`keras.Model.compile` with SOLOv2's defaults.

        Args:
            optimizer: `"auto"` (the default) is the official recipe:
                `keras_solov2.solov2_optimizer` with its warm-up and a
                constant rate of 0.01 afterwards (PyTorch-exact SGD with
                momentum 0.9, weight decay 1e-4 and gradient clipping at
                35). For the step decay of a full schedule, pass
                `keras_solov2.solov2_optimizer(steps_per_epoch)[0]`. Any Keras
                optimizer works too.
            loss: must be `None`: the loss is built in.
            **kwargs: other `keras.Model.compile` arguments (`jit_compile`,
                `metrics`, `steps_per_execution`, ...).
        """
        if loss is not None:
            raise ValueError(
                "SOLOv2 computes its own loss (focal + dice, see "
                "`keras_solov2.models.solov2.solov2_loss`); call compile() without "
                f"`loss`, got loss={loss!r}."
            )
        if optimizer == "auto":
            optimizer, _ = solov2_optimizer(steps_per_epoch=None)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded `.keras` model as it was saved.

        Keras skips this for a custom `compile()` (with a warning), which
        would leave a reloaded model uncompiled and drop its optimizer state.
        """
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ train
    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        check_targets(y)
        if x is not None:
            self._check_canvas(x)
        replicas, replica_sum = _replicas()
        is_global = self.loss_normalization == "global"
        losses = solov2_loss(
            y_pred,
            y,
            self.target_encoder,
            self.num_classes,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            mask_loss_weight=self.mask_loss_weight,
            reduce_num_pos=replica_sum if is_global else None,
        )
        # Keras' TF trainer sums the replicas' gradients and logs the loss
        # times the replica count, averaged: each replica must return its
        # share of the global loss. With a global num_pos the replicas' own
        # sums are those shares; per replica, each loss is 1/N of a mean.
        share = 1.0 if is_global else 1.0 / replicas
        # The trackers average over the replicas: give them the global value.
        logged = replicas if is_global else 1.0
        self.category_loss_tracker.update_state(losses["category_loss"] * logged)
        self.mask_loss_tracker.update_state(losses["mask_loss"] * logged)
        self.positives_overflow_tracker.update_state(losses["positives_overflow"])
        total = (losses["category_loss"] + losses["mask_loss"]) * share
        for extra in self.losses:  # regularisation losses, if any: once
            total = total + keras.ops.cast(extra, "float32") / replicas
        return total

    def _check_canvas(self, images):
        if isinstance(images, dict):
            images = images.get("images")
        shape = getattr(images, "shape", None)
        if shape is None or len(shape) != 4:
            return
        divisor = self.size_divisor
        for axis, name in ((1, "height"), (2, "width")):
            if isinstance(shape[axis], int) and shape[axis] % divisor:
                raise ValueError(
                    f"Training images must be padded to a multiple of "
                    f"size_divisor={divisor}; got {name} {shape[axis]} (images "
                    f"{tuple(shape)}). The readers in keras_solov2.data do this; "
                    "for your own arrays use "
                    "keras_solov2.utils.image_geometry.pad_with_mean."
                )

    # -------------------------------------------------------------- predict
    def preprocess(self, images):
        """The image converter's resize and padding (see its docstring)."""
        return self.image_converter.preprocess(images)

    def predict_step(self, *args):
        """Resize and pad, the network, the decoder (`solov2_predict.predict_step`).

        TensorFlow and torch call `predict_step(data)`; JAX's stateless
        trainer calls `predict_step(state, data)` and gets the new state back.
        """
        return solov2_predict.predict_step(self, *args)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict`, also accepting a list of differently-sized images.

        With a list of `(H_i, W_i, 3)` arrays of different sizes, the images
        run one at a time and the result is a list of per-image dicts, each
        trimmed to its `num_detections`.

        Arrays (numpy or tensors, or a list of same-size images) run batch by
        batch (`batch_size`, default 32) through the model's compiled predict
        function, and its outputs become numpy arrays without a copy: the
        masks of a 12 MP photo (1.2 GB for 100 detections) are held once, not
        twice as `keras.Model.predict` would. Datasets, generators, `steps`
        and `callbacks` go through `keras.Model.predict`.
        """
        if isinstance(x, (list, tuple)):
            if len({np.shape(i) for i in x}) > 1:
                results = []
                for image in x:
                    out = solov2_predict.predict_arrays(
                        self, np.asarray(image)[None], 1, 0
                    )
                    n = int(out["num_detections"][0])
                    results.append(
                        {
                            k: (v[0][:n] if np.ndim(v) > 1 else v[0])
                            for k, v in out.items()
                        }
                    )
                return results
            x = np.stack([np.asarray(i) for i in x])
        if steps is None and callbacks is None and _is_array(x):
            return solov2_predict.predict_arrays(self, x, batch_size or 32, verbose)
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
        )

    # ---------------------------------------------------------------- export
    def export(
        self,
        filepath,
        format="tf_saved_model",
        verbose=None,
        input_signature=None,
        **kwargs,
    ):
        """`keras.Model.export`, routed to `keras_solov2.export`.

        `format="tf_saved_model"` calls `keras_solov2.export.saved_model`
        (uint8 images of any size, resize and decoding inside),
        `format="litert"` calls `keras_solov2.export.tflite` (builtin ops
        only, Matrix NMS inside; `image_size=`, `quantization=`, ... as
        keyword arguments) and `format="onnx"` calls
        `keras_solov2.export.onnx` (the same graph in `ai.onnx` ops;
        `image_size=`, `opset=`, ...). Keras's own LiteRT export enables
        SELECT_TF_OPS and lets Flex ops in, which neither Android's GPU nor
        the pip runtime runs; its ONNX export writes the network alone
        (float input, no decoding). Other formats go to `keras.Model.export`.
        """
        from keras_solov2 import export as exporters

        routes = {
            "tf_saved_model": exporters.saved_model,
            "litert": exporters.tflite,
            "onnx": exporters.onnx,
        }
        if format in routes:
            if input_signature is not None:
                raise ValueError(
                    "SOLOv2 exports define their own input: uint8 images of any "
                    'size for "tf_saved_model", one image of `image_size=(H, W)` '
                    'for "litert" and "onnx". Remove `input_signature`.'
                )
            verbose = True if verbose is None else verbose
            return routes[format](self, filepath, verbose=verbose, **kwargs)
        return super().export(
            filepath,
            format=format,
            verbose=verbose,
            input_signature=input_signature,
            **kwargs,
        )

    # Keras calls these at every fit / evaluate / predict: a function traced
    # with other settings is rebuilt, so that changed settings take effect.
    def make_train_function(self, force=False):
        return super().make_train_function(force or self._settings_changed("train"))

    def make_test_function(self, force=False):
        return super().make_test_function(force or self._settings_changed("test"))

    def make_predict_function(self, force=False):
        """Keras' predict function, built for the engine that
        `solov2_predict.predict_engine` picks (see that module)."""
        force = force or self._settings_changed("predict")
        if keras.backend.backend() != "tensorflow" or self.run_eagerly:
            return super().make_predict_function(force)
        engine = solov2_predict.predict_engine(self)
        if self.predict_function is not None and not force:
            if getattr(self, "_predict_function_engine", engine) == engine:
                return self.predict_function
        self._predict_function_engine = engine
        return solov2_predict.make_predict_function(self, super().make_predict_function)

    def _settings_changed(self, function):
        current = repr(
            [getattr(self, name).settings() for name in _SETTING_LAYERS]
            + [self.focal_alpha, self.focal_gamma, self.mask_loss_weight]
            + [self.loss_normalization]
        )
        changed = self._traced_settings.get(function, current) != current
        self._traced_settings[function] = current
        return changed

    # --------------------------------------------------------------- config
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "category_ids": self.category_ids,
            "prior_probability": self.prior_probability,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "mask_loss_weight": self.mask_loss_weight,
            "loss_normalization": self.loss_normalization,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            **{
                name: keras.layers.serialize(getattr(self, name))
                for name in _SETTING_LAYERS
            },
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", *_SETTING_LAYERS):
            if isinstance(config.get(key), dict):
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)

    # -------------------------------------------------------------- presets
    @_classproperty
    def presets(cls):
        """The official checkpoints, by preset name, with their metadata."""
        return {k: dict(v) for k, v in solov2_presets.PRESETS.items()}

    @classmethod
    def from_preset(cls, preset, load_weights=True, num_classes=None, **kwargs):
        """Builds a SOLOv2 from a preset name or a preset directory.

        Args:
            preset: str. One of:
                - a checkpoint preset (`"r50_coco"`, `"r50_1x_coco"`,
                  `"r101_coco"`, `"light_r18_coco"`, `"light_r34_coco"`,
                  `"light_r50_coco"`): the official mmdetection COCO model.
                  With `load_weights=True` its checkpoint is downloaded,
                  checked against its sha256, converted and cached under
                  `$KERAS_SOLOV2_CACHE` (default `~/.cache/keras_solov2`);
                  later calls read the cache;
                - an architecture (`"r50"`, `"r101"`, `"light_r18"`,
                  `"light_r34"`, `"light_r50"`), random initialisation only;
                - a preset directory written by `save_to_preset`.
            load_weights: bool. Defaults to `True`.
            num_classes: optional int. A new classifier for `num_classes`
                classes; every other pretrained weight is kept. This is the
                fine-tuning path.
            **kwargs: overrides. Settings (`score_threshold=0.3`,
                `test_scale=None`, ...) are set on the loaded model; other
                `SOLOv2Backbone` or `SOLOv2` arguments (e.g.
                `frozen_stages=-1, norm_eval=False`) build a new model into
                which the pretrained weights are copied.

        Example:
        >>> model = keras_solov2.SOLOv2.from_preset("light_r18_coco", num_classes=3)
        """
        return preset_loader.from_preset(
            cls, preset, load_weights=load_weights, num_classes=num_classes, **kwargs
        )

    def save_to_preset(self, preset_dir, metadata=None):
        """Saves `config.json`, `model.weights.h5` and `metadata.json` (KerasHub's
        preset layout); `keras_solov2.SOLOv2.from_preset(preset_dir)` loads it."""
        preset_utils.save_to_preset(self, preset_dir, metadata=metadata)


def _forwarded(layer_name, setting):
    def get(self):
        return getattr(getattr(self, layer_name), setting)

    def set_(self, value):
        setattr(getattr(self, layer_name), setting, value)

    return property(get, set_, doc=f"`{layer_name}.{setting}` (see its docstring).")


for _name, _layer in _SETTING_LAYERS.items():
    for _setting in _layer.SETTINGS:
        setattr(SOLOv2, _setting, _forwarded(_name, _setting))


def _sublayer(name, given, settings, required):
    """The sublayer `name`: `given` (a layer or a config) or one built from
    the constructor's keyword settings."""
    own = settings[name]
    if given is None:
        # float32 whatever the policy: targets, decoding and Matrix NMS.
        layer_class = _SETTING_LAYERS[name]
        return layer_class(**{**required, **own}, dtype="float32", name=name)
    if own:
        raise ValueError(
            f"Pass either `{name}` or its settings {sorted(own)}, not both; "
            f"set them on the layer instead (`{name}.{next(iter(own))} = ...`)."
        )
    if isinstance(given, dict):
        given = keras.layers.deserialize(given)
    if not isinstance(given, _SETTING_LAYERS[name]):
        raise ValueError(
            f"`{name}` must be a {_SETTING_LAYERS[name].__name__}, got "
            f"{type(given).__name__}."
        )
    return given


LOSS_NORMALIZATIONS = ("global", "per_replica")


def _backbone_with_policy(backbone, dtype):
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


def _replicas():
    """`(num_replicas, sum_over_replicas)` in a `tf.distribute` replica
    context, else `(1, None)` (one device, and JAX, whose distributed step
    computes the loss on the global batch)."""
    if keras.backend.backend() != "tensorflow":
        return 1, None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1, None

    def replica_sum(value):
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    return context.num_replicas_in_sync, replica_sum


def _is_array(x):
    """A numpy array or a backend tensor (not a dataset or a generator)."""
    return isinstance(x, np.ndarray) or keras.ops.is_tensor(x)


def _check_per_class(argument, values, num_classes):
    if values is not None and len(values) != num_classes:
        raise ValueError(
            f"`{argument}` has {len(values)} entries but num_classes={num_classes}."
        )
