"""Training scales: the presets' official ones, carried on the model.

The expected scales are the official configs' (reference/SOLOV2.md §2.2):
the light models train at 768 x 512 down to 352 in steps of 32, the full
3x models at 1333 x 800 down to 640, `r50_1x_coco` at 1333 x 800 alone.
"""

import keras
import pytest
from helpers import tiny_model

import keras_solov2
from keras_solov2.training import train, training_scales
from keras_solov2.utils import image_geometry

LIGHT = [(768, 512), (768, 480), (768, 448), (768, 416), (768, 384), (768, 352)]
FULL = [(1333, 800), (1333, 768), (1333, 736), (1333, 704), (1333, 672), (1333, 640)]
# A small backbone in place of the preset's (the scales do not depend on it).
SMALL = dict(depth=18, stage_blocks=(1, 1, 1, 1), base_channels=8, fpn_channels=32)


def test_light_model_trains_at_the_official_scales_on_a_512_x_768_canvas():
    model = keras_solov2.SOLOv2.from_preset("light_r18", load_weights=False)
    scales = training_scales(model)
    assert scales == LIGHT
    # Above the 448 test scale: the canvas fits 512 x 768 landscape images.
    assert image_geometry.landscape_canvas_for_scales(scales, 32) == (512, 768)
    # scale= (--scale) trains at one scale, the sides in either order.
    assert training_scales(model, (320, 480)) == [(480, 320)]


@pytest.mark.parametrize(
    "preset,expected", [("r50", FULL), ("r50_coco", FULL), ("r50_1x_coco", FULL[:1])]
)
def test_full_models_train_at_their_recipes_scales(preset, expected):
    model = keras_solov2.SOLOv2.from_preset(preset, load_weights=False, **SMALL)
    assert training_scales(model) == expected
    canvas = image_geometry.landscape_canvas_for_scales(expected, 32)
    assert canvas == (800, 1344)


def test_every_preset_lists_its_scales_once():
    presets = keras_solov2.SOLOv2.presets
    assert [tuple(s) for s in presets["light_r34_coco"]["train_scales"]] == LIGHT
    assert [tuple(s) for s in presets["r101_coco"]["train_scales"]] == FULL
    architectures = keras_solov2.models.solov2.solov2_presets.ARCHITECTURES
    for architecture in architectures.values():
        assert set(architecture) == {"backbone", "task"}  # no unread copy


def test_scales_survive_a_keras_file_and_a_preset_directory(tmp_path):
    model = tiny_model(train_scales=[(96, 64), (96, 48)])
    assert model.target_encoder.train_scales == ((96, 64), (96, 48))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert training_scales(loaded) == [(96, 64), (96, 48)]
    model.save_to_preset(str(tmp_path / "preset"))
    again = keras_solov2.SOLOv2.from_preset(str(tmp_path / "preset"))
    assert training_scales(again) == [(96, 64), (96, 48)]
    again.train_scales = [(64, 128)]  # a forwarded setting; stored (long, short)
    assert training_scales(again) == [(128, 64)]


def test_a_model_without_scales_falls_back_to_its_test_scale():
    # A config saved before the scales were carried: no `train_scales` key.
    config = tiny_model(test_scale=(1333, 800)).get_config()
    del config["target_encoder"]["config"]["train_scales"]
    old = keras_solov2.SOLOv2.from_config(config)
    assert old.train_scales is None
    assert training_scales(old) == FULL  # the full models' rule
    old.test_scale = None
    with pytest.raises(ValueError, match="--scale"):
        training_scales(old)


@pytest.mark.parametrize("bad", [[], [(768,)], [(768, 0)], [(768.5, 512)], "768"])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="train_scales"):
        tiny_model(train_scales=bad)


def test_scale_is_the_keep_ratio_scale_and_image_size_its_deprecated_name(tmp_path):
    model = tiny_model()
    assert training_scales(model, scale=(320, 480)) == [(480, 320)]
    with pytest.warns(DeprecationWarning, match="pass `scale=`"):
        assert training_scales(model, image_size=(320, 480)) == [(480, 320)]
    with pytest.raises(TypeError, match="Pass `scale` only"):
        training_scales(model, scale=(64, 64), image_size=(64, 64))
    # train() takes the same names, sorted out before anything is read.
    run = str(tmp_path / "run")
    with pytest.raises(TypeError, match="Pass `scale` only"):
        train("a.json", "images", run, scale=(64, 64), image_size=(64, 64))
    with (
        pytest.warns(DeprecationWarning, match="keras_solov2.training.train"),
        pytest.raises(FileNotFoundError, match="missing.json"),
    ):
        train(str(tmp_path / "missing.json"), str(tmp_path), run, image_size=(64, 64))
