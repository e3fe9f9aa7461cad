import keras
import numpy as np

from keras_solov2.layers.pixel_normalization import PixelNormalization
from keras_solov2.models import preset_loader, preset_utils
from keras_solov2.models.solov2 import solov2_predict, solov2_presets
from keras_solov2.models.solov2.kernel_category_head import category_logits
from keras_solov2.models.solov2.solov2_loss import (
    check_loss_normalization,
    task_loss,
)
from keras_solov2.models.solov2.solov2_sublayers import (
    SETTING_LAYERS,
    backbone_with_policy,
    build_sublayers,
    check_per_class,
    classproperty,
    forward_settings,
    pop_settings,
    settings_fingerprint,
    settings_names,
)
from keras_solov2.optimizers import solov2_optimizer


@keras.saving.register_keras_serializable(package="keras_solov2")
@forward_settings
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
    (`solov2_loss`): focal loss on the category grid plus 3 x dice loss on
    the masks of the positive cells. Keras logs `loss`, `category_loss`,
    `mask_loss` and `positives_overflow`.

    Inference: `model.predict(images)` takes `(batch, H, W, 3)` images of any
    size (or a list of images of different sizes). The `image_converter`
    resizes them to `test_scale` keeping the aspect ratio and pads them; the
    network runs; the `decoder` (point NMS, dynamic masks, maskness, Matrix
    NMS) returns a dict of `masks` `(batch, max_detections, H, W)` bool at
    the original size, `labels` (int32, `-1` for padding), `scores` (`0` for
    padding), `boxes` `(batch, D, 4)` `[x1, y1, x2, y2]` of the masks,
    `num_detections` and `candidates_overflow`. Only the kept detections are
    resized to the original size, a few at a time. With
    `model.mask_resolution = "features"` it returns `mask_probs` at
    `1 / mask_stride` of the padded input instead of `masks` (what an
    exported model returns); `keras_solov2.layers.paste_masks` turns them
    into the same masks. How `predict` runs on each backend:
    `keras_solov2.models.solov2.solov2_predict`.

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
        loss_normalization: `"global"` or `"per_replica"`, the loss under
            `tf.distribute` (`solov2_loss.task_loss`). `"global"` sums
            `num_pos` over the replicas: N replicas give one device's loss
            and update on the same global batch (BatchNorm's batch
            statistics stay per replica). `"per_replica"` normalises each
            replica by its own positives, as mmdetection's multi-GPU
            training does. Defaults to `"global"`.
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
        check_per_class("class_names", class_names, num_classes)
        check_per_class("category_ids", category_ids, num_classes)
        settings = pop_settings(kwargs)
        backbone, dtype = backbone_with_policy(backbone, kwargs.pop("dtype", None))
        images = keras.Input(shape=backbone.image_shape, name="images")
        normalized = PixelNormalization(dtype=dtype, name="pixel_normalization")(images)
        features = backbone(normalized)
        outputs = {
            "category_logits": category_logits(
                features["category_features"],
                backbone.num_grids,
                num_classes,
                prior_probability,
                dtype,
            ),
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
        self.loss_normalization = check_loss_normalization(loss_normalization)
        sublayers = build_sublayers(
            backbone,
            settings,
            image_converter=image_converter,
            target_encoder=target_encoder,
            decoder=decoder,
        )
        self.image_converter = sublayers["image_converter"]
        self.target_encoder = sublayers["target_encoder"]
        self.decoder = sublayers["decoder"]
        self.category_loss_tracker = keras.metrics.Mean(name="category_loss")
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")
        self.positives_overflow_tracker = keras.metrics.Sum(name="positives_overflow")
        self._traced_settings = {}

    settings_names = staticmethod(settings_names)

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
                "`keras_solov2.models.solov2.solov2_loss`); call compile() "
                f"without `loss`, got loss={loss!r}."
            )
        if optimizer == "auto":
            optimizer, _ = solov2_optimizer(steps_per_epoch=None)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded `.keras` model as it was saved (Keras skips this
        for a custom `compile()`, leaving it uncompiled, its optimizer lost)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ train
    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The focal and dice losses (`solov2_loss.task_loss`)."""
        return task_loss(self, x, y, y_pred)

    # -------------------------------------------------------------- predict
    def preprocess(self, images):
        """The image converter's resize and padding (see its docstring)."""
        return self.image_converter.preprocess(images)

    def predict_step(self, *args):
        """`(data)`, or JAX's `(state, data)`: `solov2_predict.predict_step`."""
        return solov2_predict.predict_step(self, *args)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict`, also accepting a list of differently-sized images.

        With a list of `(H_i, W_i, 3)` arrays of different sizes, the images
        run one at a time and the result is a list of per-image dicts, each
        trimmed to its `num_detections`.

        Arrays (numpy or tensors, or a list of same-size images) run batch by
        batch (`batch_size`, default 32) through the predict engine, and its
        outputs become numpy arrays without a copy: the masks of a 12 MP
        photo (1.2 GB for 100 detections) are held once, not twice as
        `keras.Model.predict` would. Datasets, generators, `steps` and
        `callbacks` go through `keras.Model.predict`.
        """
        if isinstance(x, (list, tuple)):
            if len({np.shape(i) for i in x}) > 1:
                return solov2_predict.predict_each(self, x)
            x = np.stack([np.asarray(i) for i in x])
        is_array = isinstance(x, np.ndarray) or keras.ops.is_tensor(x)
        if steps is None and callbacks is None and is_array:
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

        `"tf_saved_model"` calls `keras_solov2.export.saved_model` (uint8
        images of any size, resize and decoding inside), `"litert"`
        `keras_solov2.export.tflite` (builtin ops only, Matrix NMS inside;
        `image_size=`, `quantization=`, ...) and `"onnx"`
        `keras_solov2.export.onnx` (the same graph in `ai.onnx` ops). Keras's
        own LiteRT export lets Flex ops in, which neither Android's GPU nor
        the pip runtime runs; its ONNX export writes the network alone.
        Other formats go to `keras.Model.export`.
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
        """Keras' predict function, for the engine that
        `solov2_predict.predict_engine` picks (see that module)."""
        force = force or self._settings_changed("predict")
        return solov2_predict.make_predict_function(
            self, force, super().make_predict_function
        )

    def _settings_changed(self, function):
        current = settings_fingerprint(self)
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
                for name in SETTING_LAYERS
            },
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", *SETTING_LAYERS):
            if isinstance(config.get(key), dict):
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)

    # -------------------------------------------------------------- presets
    @classproperty
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
