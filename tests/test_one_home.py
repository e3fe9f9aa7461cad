"""Settings that had several homes: one default each, read by every user."""

import importlib
import inspect

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

import keras_solov2
from keras_solov2 import training
from keras_solov2.app import cli, outputs

# The module (`keras_solov2.export.tflite` is also the name of its function).
tflite = importlib.import_module("keras_solov2.export.tflite")


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_one_default_schedule_1x_for_the_function_train_and_the_cli():
    optimizer, epochs = keras_solov2.solov2_optimizer(steps_per_epoch=10)
    assert epochs == 12
    schedule = optimizer.get_config()["learning_rate"]["config"]
    assert tuple(schedule["milestones"]) == (90, 110)  # epochs 9 and 11
    assert inspect.signature(training.train).parameters["schedule"].default == "1x"
    assert parse("train", "a.json", "images", "--output", "o").schedule == "1x"
    three = parse("train", "a.json", "images", "--output", "o", "--schedule", "3x")
    assert three.schedule == "3x"
    with pytest.raises(SystemExit):
        parse("train", "a.json", "images", "--output", "o", "--schedule", "2x")


def test_cli_quantizations_are_the_exporters(monkeypatch, capsys):
    args = ("export", "m.keras", "--format", "tflite", "--output", "m.tflite")
    assert parse(*args, "--quantization", "dynamic_int8").quantization == "dynamic_int8"
    monkeypatch.setattr(tflite, "QUANTIZATIONS", (None, "float16"))
    assert parse(*args, "--quantization", "float16").quantization == "float16"
    with pytest.raises(SystemExit):
        parse(*args, "--quantization", "int8")
    assert "--quantization" in capsys.readouterr().err


def test_predict_finds_every_image_format_that_pillow_reads(tmp_path):
    for name in ("a.jpg", "b.JPEG", "c.png", "d.bmp", "e.webp", "f.tif", "g.TIFF"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.rsplit("/", 1)[-1] for p in outputs.image_paths([str(tmp_path)])]
    assert found == ["a.jpg", "b.JPEG", "c.png", "d.bmp", "e.webp", "f.tif", "g.TIFF"]


def test_mask_stride_is_the_backbones_and_the_sublayers_use_it():
    model = tiny_model()
    features = model.backbone(np.zeros((1, 64, 96, 3), "float32"))
    assert features["mask_features"].shape[1:3] == (16, 24)
    assert 64 // 16 == model.backbone.mask_stride == 4
    assert model.target_encoder.mask_stride == model.backbone.mask_stride
    assert model.decoder.mask_stride == model.backbone.mask_stride
