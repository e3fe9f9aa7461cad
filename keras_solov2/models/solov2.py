import inspect
import math
import os

import keras
import numpy as np
from keras import ops

from keras_solov2.layers.opencv_resize import resize_like_opencv
from keras_solov2.layers.solov2_decoder import SOLOv2Decoder
from keras_solov2.layers.spatial import resize
from keras_solov2.layers.target_encoder import SOLOv2TargetEncoder
from keras_solov2.losses.dice import dice_loss
from keras_solov2.losses.focal import sigmoid_focal_loss
from keras_solov2.models import solov2_presets
from keras_solov2.models.image_converter import PIXEL_MEAN, PIXEL_STD, rescale_size
from keras_solov2.models.solov2_backbone import SOLOv2Backbone


class _classproperty:
    def __init__(self, getter):
        self.getter = getter

    def __get__(self, instance, owner):
        return self.getter(owner)


@keras.saving.register_keras_serializable(package="keras_solov2")
class SOLOv2(keras.Model):
    """SOLOv2 instance segmentation: a backbone, a classifier, losses, decoding.

    The network maps normalised, padded images to dense outputs:
    `category_logits` `(batch, cells, num_classes)`, `kernels`
    `(batch, cells, E)` and `mask_features` `(batch, H/4, W/4, E)`.

    Training: `model.compile(optimizer=...)` then `model.fit(dataset)`, where
    the dataset yields `(images, targets)`; `images` are normalised and padded
    (see `keras_solov2.data`), `targets` is a dict with `"masks"`
    `(batch, M, H, W)`, `"labels"` `(batch, M)` (`-1` for padding slots) and
    `"boxes"` `(batch, M, 4)`. The loss is built in (`compute_loss`): focal
    loss on the category grid (alpha 0.25, gamma 2, averaged over positives
    + 1) plus 3 x dice loss on the masks of the positive cells. Keras logs
    `loss`, `category_loss`, `mask_loss` and `positives_overflow`.

    Inference: `model.predict(images)` takes RGB images on the 0..255 scale,
    `(batch, H, W, 3)` of any size (or a list of images of different sizes).
    It resizes them to `test_scale` keeping the aspect ratio, normalises and
    pads to a multiple of 32, runs the network, point NMS, dynamic masks,
    maskness and Matrix NMS. It returns a dict of `masks` `(batch,
    max_detections, H, W)` bool at the original size, `labels` (int32, `-1`
    for padding), `scores` (`0` for padding), `boxes` `(batch, D, 4)`
    `[x1, y1, x2, y2]` derived from the masks, `num_detections` and
    `candidates_overflow` (candidates above the score threshold beyond
    `max_candidates`, dropped).

    Args:
        backbone: `keras_solov2.models.SOLOv2Backbone`.
        num_classes: int. Defaults to `80`.
        class_names: optional list of `num_classes` names. Defaults to `None`.
        category_ids: optional list of the dataset's category ids, one per
            contiguous label (e.g. `CocoDataset.category_ids`), so that
            predicted labels map back to the original ids. Defaults to `None`.
        prior_probability: float. Initial classifier probability. Defaults to
            `0.01`.
        scale_ranges: tuple of 5 `(lower, upper)` object scales per level.
            Defaults to the full models' ranges.
        sigma: float. Centre-region scale. Defaults to `0.2`.
        strides: tuple of 5 ints. Per-level area threshold at inference.
            Defaults to `(8, 8, 16, 32, 32)`.
        max_positives: int. Cap on positive (instance, cell) pairs per image
            in training. Defaults to `500`.
        focal_alpha: float. Defaults to `0.25`.
        focal_gamma: float. Defaults to `2.0`.
        mask_loss_weight: float. Defaults to `3.0`.
        test_scale: `(long, short)` keep-ratio test resize, or `None` to run at
            the input size. Defaults to `(1333, 800)`.
        size_divisor: int. Padding multiple. Defaults to `32`.
        score_threshold, mask_threshold, max_candidates, pre_nms_top_k,
        max_detections, nms_kernel, nms_sigma, filter_threshold: inference
            settings, see `keras_solov2.layers.SOLOv2Decoder`. Defaults are
            the official test config (0.1, 0.5, 1000, 500, 100, "gaussian",
            2.0, 0.05).
        **kwargs: `keras.Model` keyword arguments.

    Example:
    >>> model = keras_solov2.SOLOv2.from_preset(
    ...     "light_r18_coco", load_weights=False, num_classes=3)
    >>> model.compile(optimizer="sgd")
    >>> outputs = model.predict(np.zeros((1, 240, 320, 3), "uint8"))

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
        scale_ranges=solov2_presets.FULL_SCALE_RANGES,
        sigma=0.2,
        strides=(8, 8, 16, 32, 32),
        max_positives=500,
        focal_alpha=0.25,
        focal_gamma=2.0,
        mask_loss_weight=3.0,
        test_scale=(1333, 800),
        size_divisor=32,
        score_threshold=0.1,
        mask_threshold=0.5,
        max_candidates=1000,
        pre_nms_top_k=500,
        max_detections=100,
        nms_kernel="gaussian",
        nms_sigma=2.0,
        filter_threshold=0.05,
        **kwargs,
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"`class_names` has {len(class_names)} entries but num_classes="
                f"{num_classes}."
            )
        images = keras.Input(shape=backbone.image_shape, name="images")
        features = backbone(images)
        conv_cls = keras.layers.Conv2D(
            num_classes,
            3,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant(
                -math.log((1 - prior_probability) / prior_probability)
            ),
            name="conv_cls",
        )
        logits = [
            keras.layers.Reshape((s * s, num_classes), name=f"category_logits_{i}")(
                conv_cls(x)
            )
            for i, (s, x) in enumerate(
                zip(backbone.num_grids, features["category_features"])
            )
        ]
        outputs = {
            "category_logits": keras.layers.Concatenate(axis=1, name="category_logits")(
                logits
            ),
            "kernels": features["kernels"],
            "mask_features": features["mask_features"],
        }
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        if category_ids is not None and len(category_ids) != num_classes:
            raise ValueError(
                f"`category_ids` has {len(category_ids)} entries but num_classes="
                f"{num_classes}."
            )
        self.class_names = None if class_names is None else list(class_names)
        self.category_ids = (
            None if category_ids is None else [int(i) for i in category_ids]
        )
        self.prior_probability = prior_probability
        self.scale_ranges = tuple(tuple(r) for r in scale_ranges)
        self.sigma = sigma
        self.strides = tuple(strides)
        self.max_positives = max_positives
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_loss_weight = mask_loss_weight
        self.test_scale = None if test_scale is None else tuple(test_scale)
        self.size_divisor = size_divisor
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.max_candidates = max_candidates
        self.pre_nms_top_k = pre_nms_top_k
        self.max_detections = max_detections
        self.nms_kernel = nms_kernel
        self.nms_sigma = nms_sigma
        self.filter_threshold = filter_threshold

        self.target_encoder = SOLOv2TargetEncoder(
            num_grids=backbone.num_grids,
            scale_ranges=self.scale_ranges,
            sigma=sigma,
            max_positives=max_positives,
            name="target_encoder",
        )
        self.decoder = SOLOv2Decoder(
            num_grids=backbone.num_grids,
            strides=self.strides,
            score_threshold=score_threshold,
            mask_threshold=mask_threshold,
            max_candidates=max_candidates,
            pre_nms_top_k=pre_nms_top_k,
            max_detections=max_detections,
            nms_kernel=nms_kernel,
            nms_sigma=nms_sigma,
            filter_threshold=filter_threshold,
            name="decoder",
        )
        self.category_loss_tracker = keras.metrics.Mean(name="category_loss")
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")
        self.positives_overflow_tracker = keras.metrics.Sum(name="positives_overflow")

    # ------------------------------------------------------------------ train
    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if y is None:
            raise ValueError(
                "SOLOv2 needs targets to compute its loss: the dataset must yield "
                "(images, {'masks', 'labels', 'boxes'})."
            )
        for key in ("masks", "labels", "boxes"):
            if key not in y:
                raise ValueError(
                    f"SOLOv2 targets lack the key {key!r}; got {sorted(y)}."
                )
        logits = ops.cast(y_pred["category_logits"], "float32")
        kernels = ops.cast(y_pred["kernels"], "float32")
        mask_features = ops.cast(y_pred["mask_features"], "float32")
        batch = ops.shape(logits)[0]
        cells = logits.shape[1]
        h, w, channels = (
            ops.shape(mask_features)[1],
            ops.shape(mask_features)[2],
            mask_features.shape[3],
        )
        targets = self.target_encoder(
            y["masks"], y["labels"], y["boxes"], mask_size=(h, w)
        )

        category = targets["category_targets"]
        one_hot = ops.one_hot(
            ops.where(category >= 0, category, self.num_classes),
            self.num_classes + 1,
        )[..., : self.num_classes]
        num_pos = ops.cast(ops.sum(targets["num_positive_cells"]), "float32")
        category_loss = ops.sum(
            sigmoid_focal_loss(logits, one_hot, self.focal_alpha, self.focal_gamma)
        ) / (num_pos + 1.0)

        batch_index = ops.expand_dims(ops.arange(batch, dtype="int32"), 1)
        pair_kernels = ops.take(
            ops.reshape(kernels, (-1, channels)),
            batch_index * cells + targets["pair_cells"],
            axis=0,
        )
        mask_targets = targets["mask_targets"]
        num_instances = ops.shape(mask_targets)[1]
        pair_targets = ops.take(
            ops.reshape(mask_targets, (-1, h * w)),
            batch_index * num_instances + targets["pair_instances"],
            axis=0,
        )
        features = ops.reshape(mask_features, (batch, h * w, channels))
        mask_logits = ops.einsum("bpe,bne->bpn", pair_kernels, features)
        per_pair = dice_loss(mask_logits, pair_targets)
        per_pair = ops.where(targets["pair_valid"], per_pair, 0.0)
        mask_loss = (
            self.mask_loss_weight * ops.sum(per_pair) / ops.maximum(num_pos, 1.0)
        )
        self.category_loss_tracker.update_state(category_loss)
        self.mask_loss_tracker.update_state(mask_loss)
        self.positives_overflow_tracker.update_state(
            ops.cast(ops.sum(targets["positives_overflow"]), "float32")
        )
        total = category_loss + mask_loss
        for extra in self.losses:  # regularisation losses, if any
            total = total + ops.cast(extra, "float32")
        return total

    # -------------------------------------------------------------- predict
    def preprocess(self, images):
        """Resize to `test_scale`, normalise and pad, inside the graph.

        Args:
            images: `(batch, H, W, 3)` RGB on the 0..255 scale. uint8 inputs
                of static size are resized bit-exactly like OpenCV's
                `INTER_LINEAR` (mmdetection's test pipeline); other inputs
                with float bilinear interpolation (uint8 values rounded).

        Returns:
            `(inputs, resized_size, original_size)`.
        """
        is_uint8 = "uint8" in str(images.dtype)
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        original_size = (height, width)
        raw = images
        images = ops.cast(images, "float32")
        if self.test_scale is None:
            resized_size = original_size
        else:
            resized_size = _rescale_size(height, width, self.test_scale)
            static = all(isinstance(v, int) for v in (height, width, *resized_size))
            if is_uint8 and static:
                # uint8 inputs are resized exactly as mmdetection's pipeline
                # does (OpenCV's fixed-point INTER_LINEAR).
                images = resize_like_opencv(raw, resized_size)
            else:
                images = resize(images, resized_size, "bilinear")
                if is_uint8:
                    images = ops.clip(ops.round(images), 0.0, 255.0)
        images = (images - np.asarray(PIXEL_MEAN, "float32")) / np.asarray(
            PIXEL_STD, "float32"
        )
        d = self.size_divisor
        pad_h = (resized_size[0] + d - 1) // d * d - resized_size[0]
        pad_w = (resized_size[1] + d - 1) // d * d - resized_size[1]
        images = ops.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        return images, resized_size, original_size

    def predict_step(self, *args):
        # TensorFlow / torch call `predict_step(data)`; JAX's stateless trainer
        # calls `predict_step(state, data)` and expects the new state back.
        if len(args) == 2:
            (trainable, non_trainable), data = args
        else:
            (data,) = args
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(images, dict):
            images = images["images"]
        inputs, resized_size, original_size = self.preprocess(images)
        if len(args) == 2:
            outputs, non_trainable = self.stateless_call(
                trainable, non_trainable, inputs, training=False
            )
        else:
            outputs = self(inputs, training=False)
        detections = self.decoder(
            outputs["category_logits"],
            outputs["kernels"],
            outputs["mask_features"],
            resized_size=resized_size,
            original_size=original_size,
        )
        return (detections, non_trainable) if len(args) == 2 else detections

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict`, also accepting a list of differently-sized images.

        With a list of `(H_i, W_i, 3)` arrays of different sizes, the images
        run one at a time and the result is a list of per-image dicts, each
        trimmed to its `num_detections`.
        """
        if isinstance(x, (list, tuple)) and len({np.shape(i) for i in x}) > 1:
            results = []
            for image in x:
                out = super().predict(
                    np.asarray(image)[None], verbose=0, callbacks=callbacks
                )
                n = int(out["num_detections"][0])
                results.append(
                    {k: (v[0][:n] if np.ndim(v) > 1 else v[0]) for k, v in out.items()}
                )
            return results
        if isinstance(x, (list, tuple)):
            x = np.stack([np.asarray(i) for i in x])
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
        )

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
            "scale_ranges": self.scale_ranges,
            "sigma": self.sigma,
            "strides": self.strides,
            "max_positives": self.max_positives,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "mask_loss_weight": self.mask_loss_weight,
            "test_scale": self.test_scale,
            "size_divisor": self.size_divisor,
            "score_threshold": self.score_threshold,
            "mask_threshold": self.mask_threshold,
            "max_candidates": self.max_candidates,
            "pre_nms_top_k": self.pre_nms_top_k,
            "max_detections": self.max_detections,
            "nms_kernel": self.nms_kernel,
            "nms_sigma": self.nms_sigma,
            "filter_threshold": self.filter_threshold,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.layers.deserialize(config["backbone"])
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
            **kwargs: overrides for `SOLOv2Backbone` or `SOLOv2` arguments
                (e.g. `frozen_stages=-1, norm_eval=False, test_scale=None`).
                They build a new model, into which pretrained weights are
                copied layer by layer.

        Example:
        >>> model = keras_solov2.SOLOv2.from_preset("light_r18_coco", num_classes=3)
        """
        from keras_solov2.models import preset_utils

        if isinstance(preset, str) and os.path.isdir(preset):
            model = preset_utils.load_preset_dir(preset, load_weights=load_weights)
            return model._with_overrides(num_classes, kwargs)
        if preset in solov2_presets.PRESETS:
            spec = solov2_presets.PRESETS[preset]
            if load_weights:
                model = preset_utils.load_preset_dir(_cached_preset(preset, spec))
                return model._with_overrides(num_classes, kwargs)
            architecture, class_names = spec["architecture"], spec["class_names"]
        elif preset in solov2_presets.ARCHITECTURES:
            if load_weights:
                raise ValueError(
                    f"'{preset}' is an architecture without weights; pass "
                    "load_weights=False, or use a checkpoint preset such as "
                    f"'{preset}_coco'."
                )
            architecture, class_names = preset, None
        else:
            known = sorted(solov2_presets.PRESETS) + sorted(
                solov2_presets.ARCHITECTURES
            )
            raise ValueError(
                f"Unknown SOLOv2 preset {preset!r}: not a preset name or a preset "
                f"directory. Known presets: {known}."
            )
        arch = solov2_presets.ARCHITECTURES[architecture]
        backbone_kwargs = dict(arch["backbone"])
        task_kwargs = dict(arch["task"])
        for key, value in kwargs.items():
            (backbone_kwargs if key in _BACKBONE_ARGS else task_kwargs)[key] = value
        if num_classes is None:
            num_classes = (
                80 if class_names is not None else task_kwargs.pop("num_classes", 80)
            )
        elif class_names is not None and num_classes != len(class_names):
            class_names = None
        task_kwargs.setdefault("class_names", class_names)
        backbone = SOLOv2Backbone(**backbone_kwargs)
        return cls(backbone=backbone, num_classes=num_classes, **task_kwargs)

    def save_to_preset(self, preset_dir, metadata=None):
        """Saves `config.json`, `model.weights.h5` and `metadata.json` (KerasHub's
        preset layout); `keras_solov2.SOLOv2.from_preset(preset_dir)` loads it."""
        from keras_solov2.models import preset_utils

        preset_utils.save_to_preset(self, preset_dir, metadata=metadata)

    def _with_overrides(self, num_classes, overrides):
        """A copy with a new classifier and/or other arguments, keeping weights."""
        if num_classes is None and not overrides:
            return self
        config = self.get_config()
        backbone_config = dict(config["backbone"]["config"])
        for key, value in overrides.items():
            if key in _BACKBONE_ARGS:
                backbone_config[key] = value
            else:
                config[key] = value
        new_head = num_classes is not None and num_classes != self.num_classes
        if num_classes is not None:
            config["num_classes"] = num_classes
        if new_head:
            for key in ("class_names", "category_ids"):
                if key not in overrides:
                    config[key] = None
        config["backbone"] = SOLOv2Backbone(**backbone_config)
        model = type(self).from_config(config)
        for source, target in zip(self.backbone.weights, model.backbone.weights):
            if tuple(source.shape) != tuple(target.shape):
                raise ValueError(
                    f"Cannot keep the pretrained weight {source.path} "
                    f"{tuple(source.shape)}: the overrides {sorted(overrides)} change "
                    f"it to {tuple(target.shape)}. Only the classifier may change."
                )
            target.assign(source)
        if not new_head:
            conv_cls = self.get_layer("conv_cls")
            model.get_layer("conv_cls").set_weights(conv_cls.get_weights())
        return model


_BACKBONE_ARGS = set(inspect.signature(SOLOv2Backbone.__init__).parameters) - {"self"}


def _cached_preset(name, spec):
    """Converted preset directory for an official checkpoint, built on first use."""
    from keras_solov2.convert.mmdet import from_mmdet
    from keras_solov2.models import preset_utils

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


def _rescale_size(height, width, scale):
    """Keep-ratio resize target, with Python ints when the shape is static."""
    if isinstance(height, int) and isinstance(width, int):
        return rescale_size(height, width, scale)
    long_edge, short_edge = float(max(scale)), float(min(scale))
    h = ops.cast(height, "float32")
    w = ops.cast(width, "float32")
    factor = ops.minimum(long_edge / ops.maximum(h, w), short_edge / ops.minimum(h, w))
    return (
        ops.cast(ops.floor(h * factor + 0.5), "int32"),
        ops.cast(ops.floor(w * factor + 0.5), "int32"),
    )
