"""Files saved before the SOLOv2 modules moved into `models/solov2/` load.

`tests/fixtures/solov2_before_move/config.json` is the preset config of a
tiny model written by the code of 2026-12-06, when the task lived in
`keras_solov2.models.solov2` (a module), the decoder in
`keras_solov2.layers.solov2_decoder` and the target encoder in
`keras_solov2.layers.target_encoder`. Keras stores those module paths in
every config; the classes are found by their registered names
(`keras_solov2>SOLOv2Decoder`, ...), so the old paths do not matter.
"""

import json
import shutil
import zipfile

import keras
import numpy as np
from helpers import FIXTURES

import keras_solov2

FIXTURE = FIXTURES / "solov2_before_move"
# module path before the move -> after it
MOVED = {
    "keras_solov2.models.solov2": "keras_solov2.models.solov2.solov2",
    "keras_solov2.models.solov2_backbone": (
        "keras_solov2.models.solov2.solov2_backbone"
    ),
    "keras_solov2.models.solov2_image_converter": (
        "keras_solov2.models.solov2.solov2_image_converter"
    ),
    "keras_solov2.layers.target_encoder": (
        "keras_solov2.models.solov2.solov2_target_encoder"
    ),
    "keras_solov2.layers.solov2_decoder": ("keras_solov2.models.solov2.solov2_decoder"),
}


def modules(config):
    """Every `"module"` entry of a serialised config, nested ones included."""
    if isinstance(config, dict):
        found = {config["module"]} if isinstance(config.get("module"), str) else set()
        return found.union(*(modules(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(modules(v) for v in config))
    return set()


def old_paths(config):
    """`config` with the module paths of before the move."""
    if isinstance(config, dict):
        config = {k: old_paths(v) for k, v in config.items()}
        new_to_old = {new: old for old, new in MOVED.items()}
        if config.get("module") in new_to_old:
            config["module"] = new_to_old[config["module"]]
        return config
    if isinstance(config, list):
        return [old_paths(v) for v in config]
    return config


def image():
    return np.random.default_rng(0).integers(0, 256, (1, 60, 90, 3)).astype("uint8")


def assert_same_predictions(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        if key == "scores":
            np.testing.assert_allclose(a[key], b[key], atol=1e-6)
        else:
            np.testing.assert_array_equal(a[key], b[key])


def test_the_fixture_holds_the_old_module_paths():
    config = json.loads((FIXTURE / "config.json").read_text())
    assert set(MOVED) <= modules(config)


def test_a_preset_saved_before_the_move_loads(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    model = keras.saving.deserialize_keras_object(config)
    assert isinstance(model, keras_solov2.SOLOv2)
    assert isinstance(model.decoder, keras_solov2.layers.SOLOv2Decoder)
    assert model.max_detections == 10
    preset = tmp_path / "preset"
    shutil.copytree(FIXTURE, preset)
    model.save_weights(preset / "model.weights.h5")
    loaded = keras_solov2.SOLOv2.from_preset(str(preset))
    assert_same_predictions(
        loaded.predict(image(), verbose=0), model.predict(image(), verbose=0)
    )


def test_a_keras_file_saved_before_the_move_loads(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    model = keras.saving.deserialize_keras_object(config)
    saved = tmp_path / "new.keras"
    model.save(saved)
    before = tmp_path / "before_move.keras"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(before, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                written = json.loads(data)
                assert set(MOVED.values()) <= modules(written)
                data = json.dumps(old_paths(written)).encode()
            target.writestr(item, data)
    loaded = keras.saving.load_model(before)
    assert type(loaded.decoder) is keras_solov2.layers.SOLOv2Decoder
    assert_same_predictions(
        loaded.predict(image(), verbose=0), model.predict(image(), verbose=0)
    )
