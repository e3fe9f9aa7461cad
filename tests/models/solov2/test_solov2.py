"""The SOLOv2 task: construction, presets, fit, predict, save/load."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import rectangle_batch, tiny_model

import keras_solov2
from keras_solov2.models.solov2 import solov2_presets

# Random weights score every cell about 0.01 (the classifier prior): without
# the score and filter thresholds every slot holds a detection.
EVERYTHING = {"score_threshold": 0.0, "filter_threshold": 0.0}


def test_official_parameter_counts():
    # The official mmdetection checkpoints, BN running statistics included.
    r50 = keras_solov2.SOLOv2.from_preset("r50_coco", load_weights=False)
    assert r50.count_params() == 46_646_032
    light = keras_solov2.SOLOv2.from_preset("light_r18_coco", load_weights=False)
    assert light.count_params() == 18_281_360
    assert light.test_scale == (768, 448)
    assert light.backbone.kernel_channels == 128
    assert len(light.class_names) == 80
    assert light.category_ids == list(solov2_presets.COCO_CATEGORY_IDS)


def test_presets_metadata_and_errors():
    presets = keras_solov2.SOLOv2.presets
    assert set(presets) == {
        "r50_1x_coco", "r50_coco", "r101_coco",
        "light_r18_coco", "light_r34_coco", "light_r50_coco",
    }  # fmt: skip
    assert presets["r50_coco"]["coco_mask_ap"] == 37.5
    assert presets["r50_coco"]["url"].endswith("-fed092d4.pth")
    with pytest.raises(ValueError, match="Unknown SOLOv2 preset"):
        keras_solov2.SOLOv2.from_preset("r51_coco", load_weights=False)
    with pytest.raises(ValueError, match="architecture without weights"):
        keras_solov2.SOLOv2.from_preset("light_r18")
    model = keras_solov2.SOLOv2.from_preset(
        "light_r18_coco", load_weights=False, num_classes=3, frozen_stages=-1
    )
    assert model.num_classes == 3 and model.class_names is None
    assert model.get_layer("conv_cls").kernel.shape[-1] == 3
    assert model.backbone.frozen_stages == -1


def test_frozen_stages_and_norm_eval():
    model = tiny_model(frozen_stages=1, norm_eval=True)
    backbone = model.backbone
    assert not backbone.get_layer("backbone_conv1").trainable
    assert not backbone.get_layer("backbone_layer1_0_conv1").trainable
    assert backbone.get_layer("backbone_layer2_0_conv1").trainable
    bn = backbone.get_layer("backbone_layer2_0_bn1")
    x = np.random.default_rng(0).normal(3, 2, (2, 64, 64, 3)).astype("float32")
    before = [np.asarray(v).copy() for v in bn.non_trainable_weights]
    model(x, training=True)
    after = [np.asarray(v) for v in bn.non_trainable_weights]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)  # statistics stay frozen


def test_fit_reduces_the_loss():
    keras.utils.set_random_seed(0)
    model = tiny_model()
    images, targets = rectangle_batch(batch=2, size=64)
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
    history = model.fit(dataset, steps_per_epoch=15, epochs=3, verbose=0).history
    assert set(history) >= {"loss", "category_loss", "mask_loss", "positives_overflow"}
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["mask_loss"][-1] < history["mask_loss"][0]
    assert history["positives_overflow"] == [0.0, 0.0, 0.0]


def test_batch_without_instances_trains_with_finite_losses():
    model = tiny_model()
    images, targets = rectangle_batch(batch=2, size=64)
    targets = {
        "masks": np.zeros_like(targets["masks"]),
        "labels": np.full_like(targets["labels"], -1),
        "boxes": np.zeros_like(targets["boxes"]),
    }
    model.compile(optimizer="sgd", jit_compile=True)
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    assert logs["mask_loss"] == 0.0
    assert 0.0 < logs["category_loss"]


def test_positive_overflow_is_reported():
    model = tiny_model(max_positives=2)
    images, targets = rectangle_batch(batch=2, size=64)
    model.compile(optimizer="sgd")
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert logs["positives_overflow"] > 0


def test_missing_targets_raise():
    model = tiny_model()
    images, targets = rectangle_batch(batch=1, size=64)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="boxes"):
        model.train_on_batch(
            images, {"masks": targets["masks"], "labels": targets["labels"]}
        )


def test_every_entry_point_takes_raw_images():
    model = tiny_model()
    images, targets = rectangle_batch(batch=2, size=64)
    model.compile(optimizer="sgd")
    # uint8 and float32 carrying the same 0..255 values are the same input.
    as_float = model.test_on_batch(images, targets, return_dict=True)
    as_uint8 = model.test_on_batch(images.astype("uint8"), targets, return_dict=True)
    assert as_float == as_uint8
    # The graph normalises: the backbone sees (x - mean) / std.
    mean = np.asarray([123.675, 116.28, 103.53], "float32")
    std = np.asarray([58.395, 57.12, 57.375], "float32")
    features = model.backbone((images - mean) / std)
    outputs = model(images)
    np.testing.assert_allclose(
        outputs["mask_features"], features["mask_features"], rtol=1e-5, atol=1e-5
    )
    # predict on a canvas image without resizing runs the same network.
    model.test_scale = None
    direct = model.predict(images[:1].astype("uint8"), verbose=0)
    via_model = model.decoder(
        outputs["category_logits"][:1],
        outputs["kernels"][:1],
        outputs["mask_features"][:1],
        resized_size=(64, 64),
        original_size=(64, 64),
    )
    np.testing.assert_array_equal(direct["masks"], np.asarray(via_model["masks"]))


def test_training_images_must_fill_the_canvas():
    model = tiny_model()
    images, targets = rectangle_batch(batch=2, size=64)
    model.compile(optimizer="sgd")
    cropped = {**targets, "masks": targets["masks"][:, :, :60, :60]}
    with pytest.raises(ValueError, match="multiple of size_divisor=32"):
        model.train_on_batch(images[:, :60, :60], cropped)


def test_compile_defaults_to_the_official_recipe():
    model = tiny_model()
    model.compile()
    optimizer = model.optimizer
    assert isinstance(optimizer, keras_solov2.TorchSGD)
    config = optimizer.get_config()
    assert config["momentum"] == 0.9 and config["weight_decay"] == 1e-4
    assert config["max_grad_norm"] == 35.0
    rate = keras.optimizers.schedules.deserialize(config["learning_rate"])
    assert np.isclose(float(rate(0)), 1e-4) and np.isclose(float(rate(500)), 0.01)
    assert np.isclose(float(rate(10**6)), 0.01)  # no step decay without a schedule
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(loss="mse")


def test_config_and_keras_file_round_trip(tmp_path):
    model = tiny_model(
        test_scale=(96, 64),
        score_threshold=0.0,
        class_names=["a", "b", "c"],
        category_ids=[3, 7, 90],
    )
    images = np.random.default_rng(2).integers(0, 255, (1, 50, 70, 3)).astype("uint8")
    expected = model.predict(images, verbose=0)
    config = model.get_config()
    rebuilt = keras_solov2.SOLOv2.from_config(config)
    assert rebuilt.get_config() == config
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_solov2.SOLOv2)
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.category_ids == [3, 7, 90]
    got = loaded.predict(images, verbose=0)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_a_trained_keras_file_reloads_compiled_and_continues_the_same(tmp_path):
    import warnings

    images, targets = rectangle_batch(batch=2, size=64)
    model = tiny_model()
    model.compile()  # the default: TorchSGD with the official warm-up
    model.train_on_batch(images, targets)
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when it cannot recompile
        loaded = keras.saving.load_model(path)
    assert loaded.compiled
    assert type(loaded.optimizer) is type(model.optimizer)
    assert int(loaded.optimizer.iterations) == 1
    # The momentum buffers came back too: the next step is the same update.
    expected = model.train_on_batch(images, targets, return_dict=True)
    got = loaded.train_on_batch(images, targets, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# Each setting with a value that changes what the model returns.
INFERENCE_CHANGES = {
    "strides": (60, 60, 60, 60, 60),
    "score_threshold": 0.9,
    "mask_threshold": 0.7,
    "max_candidates": 5,
    "pre_nms_top_k": 3,
    "max_detections": 4,
    "nms_kernel": "linear",
    "nms_sigma": 8.0,
    "filter_threshold": 0.45,
    "mask_resolution": "features",
    "test_scale": (64, 48),
    "size_divisor": 64,
}
TRAINING_CHANGES = {
    "scale_ranges": ((1, 8), (4, 16), (8, 32), (16, 64), (32, 128)),
    "center_sigma": 0.5,
    "max_positives": 3,
}


def spread_scores_model(**kwargs):
    """A tiny model whose category scores spread over (0, 1), with a fixed
    classifier, so that thresholds and NMS settings all matter."""
    keras.utils.set_random_seed(5)
    settings = {"test_scale": (96, 64), "max_detections": 7, **EVERYTHING, **kwargs}
    model = tiny_model(**settings)
    kernel, bias = model.get_layer("conv_cls").get_weights()
    rng = np.random.default_rng(0)
    model.get_layer("conv_cls").set_weights(
        [rng.normal(0, 0.2, kernel.shape).astype("float32"), np.zeros_like(bias)]
    )
    return model


def assert_same_outputs(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def differs(a, b):
    if sorted(a) != sorted(b):
        return True
    return any(
        np.shape(a[k]) != np.shape(b[k]) or not np.array_equal(a[k], b[k]) for k in a
    )


@pytest.mark.parametrize("setting", sorted(INFERENCE_CHANGES))
def test_changed_inference_setting_takes_effect_and_is_saved(setting, tmp_path):
    value = INFERENCE_CHANGES[setting]
    model = spread_scores_model()
    images = np.random.default_rng(4).integers(0, 255, (1, 75, 90, 3)).astype("uint8")
    before = model.predict(images, verbose=0)  # traces with the old value
    setattr(model, setting, value)
    assert getattr(model, setting) == value
    after = model.predict(images, verbose=0)
    assert differs(before, after), f"changing {setting} changed nothing"
    # The same as a model built with that value, with the same weights.
    fresh = spread_scores_model(**{setting: value})
    fresh.set_weights(model.get_weights())
    assert_same_outputs(fresh.predict(images, verbose=0), after)
    # Saved and reloaded with it.
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert getattr(loaded, setting) == value
    assert_same_outputs(loaded.predict(images, verbose=0), after)
    assert keras_solov2.SOLOv2.from_config(model.get_config()).get_config() == (
        model.get_config()
    )


@pytest.mark.parametrize("setting", sorted(TRAINING_CHANGES))
def test_changed_training_setting_takes_effect_and_is_saved(setting, tmp_path):
    value = TRAINING_CHANGES[setting]
    model = tiny_model()
    images, targets = rectangle_batch(batch=2, size=64)
    model.compile(optimizer="sgd")
    before = model.test_on_batch(images, targets, return_dict=True)
    setattr(model, setting, value)
    after = model.test_on_batch(images, targets, return_dict=True)
    assert after != before, f"changing {setting} changed nothing"
    fresh = tiny_model(**{setting: value})
    fresh.set_weights(model.get_weights())
    fresh.compile(optimizer="sgd")
    assert fresh.test_on_batch(images, targets, return_dict=True) == after
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert getattr(loaded, setting) == getattr(model, setting)
    loaded.compile(optimizer="sgd")
    assert loaded.test_on_batch(images, targets, return_dict=True) == after


def test_bad_settings_are_refused_with_their_name():
    model = tiny_model()
    for setting, value in [
        ("score_threshold", 1.5),
        ("max_detections", 0),
        ("nms_kernel", "box"),
        ("strides", (8, 8)),
        ("test_scale", (800,)),
        ("size_divisor", 0),
        ("scale_ranges", ((1, 2),)),
        ("max_positives", -1),
    ]:
        with pytest.raises(ValueError, match=setting):
            setattr(model, setting, value)
    with pytest.raises(ValueError, match="either `decoder` or its settings"):
        tiny_model(decoder=model.decoder, score_threshold=0.2)


def test_the_sublayers_take_the_backbones_mask_stride():
    class Stride8Backbone(keras_solov2.SOLOv2Backbone):
        mask_stride = 8  # what a backbone fused at P3 would say

    backbone = tiny_model().backbone
    config = backbone.get_config()
    model = keras_solov2.SOLOv2(Stride8Backbone.from_config(config), num_classes=3)
    assert model.decoder.mask_stride == model.target_encoder.mask_stride == 8
    with pytest.raises(ValueError, match="mask_stride 4 differs"):
        keras_solov2.SOLOv2(
            Stride8Backbone.from_config(config),
            num_classes=3,
            decoder=tiny_model().decoder,
        )
