"""Checkpoint reading, key mapping, preset directories and the download cache.

Checkpoints are written in PyTorch's zip format by `torch_zip` (no torch
needed) from a tiny architecture registered for the test.
"""

import json
import os
import pickle
import re
import sys
import zipfile

import numpy as np
import pytest
from helpers import FIXTURES, mmdet_state_dict, tiny_model
from torch_zip import PickledCall, write_torch_checkpoint

import keras_solov2
from keras_solov2.convert import from_mmdet, load_mmdet_state_dict, load_state_dict
from keras_solov2.convert.mmdet_keys import target_variables
from keras_solov2.models import preset_utils
from keras_solov2.models.solov2 import solov2_presets

SYSTEM = f"{os.system.__module__}.system"  # posix.system or nt.system
COCO_JSON = FIXTURES / "coco_mini" / "annotations" / "instances_val2017.json"


@pytest.fixture
def tiny_arch(monkeypatch):
    """Registers architecture 'tiny' and returns a random model of it."""
    model = tiny_model(num_classes=4)
    backbone = model.backbone.get_config()
    for key in ("name", "trainable", "image_shape"):
        backbone.pop(key)
    monkeypatch.setitem(
        solov2_presets.ARCHITECTURES,
        "tiny",
        {
            "backbone": backbone,
            "task": {"scale_ranges": model.scale_ranges, "test_scale": None},
        },
    )
    return model


def test_reader_never_executes_pickle_code(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    write_torch_checkpoint(
        path,
        {"meta": {"note": "x"}, "state_dict": state},
        extra_calls=[(os.system, (f"touch {marker}",))],
    )
    loaded, meta, refused = load_state_dict(path)
    assert not marker.exists()
    assert refused == [SYSTEM]
    np.testing.assert_array_equal(loaded["w"], state["w"])
    # A refused object inside the state dict is an error naming the key.
    evil = PickledCall(os.system, (f"touch {marker}",))
    write_torch_checkpoint(path, {"state_dict": {"w": state["w"], "evil": evil}})
    with pytest.raises(ValueError, match=rf"'evil' is a refused global {SYSTEM}"):
        load_state_dict(path)
    assert not marker.exists()
    bad = str(tmp_path / "bad.pth")
    write_torch_checkpoint(bad, {"w": state["w"], "x": "text"})
    with pytest.raises(ValueError, match="'x'"):
        load_state_dict(bad)


@pytest.mark.parametrize("where", ["state_dict", "checkpoint"])
def test_refused_global_as_the_state_dict_is_named(tmp_path, where):
    """A state dict (or whole checkpoint) that is a pickled `os.system` call."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    call = PickledCall(os.system, (f"touch {marker}",))
    write_torch_checkpoint(
        str(path), {"state_dict": call} if where == "state_dict" else call
    )
    with pytest.raises(ValueError) as error:
        load_state_dict(str(path))
    message = str(error.value)
    assert str(path) in message
    assert f"refused global {SYSTEM}" in message
    assert "not a plain PyTorch checkpoint" in message
    assert not marker.exists()
    # The same through the public entry point, not an AttributeError.
    with pytest.raises(ValueError, match=f"refused global {SYSTEM}"):
        from_mmdet(str(path), progress=False)
    assert not marker.exists()
    # Control: a plain pickle.load of that very file does run the command.
    with zipfile.ZipFile(path) as archive:
        pickle.loads(archive.read("archive/data.pkl"))
    assert marker.exists()


def test_reader_handles_strides_dtypes_and_scalars(tmp_path):
    path = str(tmp_path / "c.pth")
    transposed = np.arange(12, dtype=np.float32).reshape(3, 4).T  # non-contiguous
    state = {
        "t": transposed,
        "i": np.array([1, -2], np.int64),
        "s": np.array(5, np.int64),
        "h": np.ones((2, 2), np.float16),
    }
    write_torch_checkpoint(path, {"state_dict": state})
    loaded, _, _ = load_state_dict(path)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key], value)


def test_legacy_or_foreign_files_fail_clearly(tmp_path, monkeypatch):
    """Without torch, a non-zip file is an error naming the file and the fix."""
    path = tmp_path / "old.pth"
    path.write_bytes(b"\x80\x02not a zip")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
    with pytest.raises(ValueError) as error:
        load_state_dict(str(path))
    message = str(error.value)
    assert str(path) in message
    assert "legacy (pre-zip) PyTorch checkpoint" in message
    assert "keras-solov2[torch]" in message


def test_legacy_checkpoints_with_torch(tmp_path):
    """With torch: legacy files are read, foreign files name the file."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "old.pth"
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save(
        {"meta": {}, "state_dict": {"w": weight}},
        path,
        _use_new_zipfile_serialization=False,
    )
    assert not zipfile.is_zipfile(path)
    state, _, _ = load_state_dict(str(path))
    np.testing.assert_array_equal(state["w"], np.arange(6).reshape(2, 3))
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ValueError, match=re.escape(str(foreign))):
        load_state_dict(str(foreign))


def test_from_mmdet_round_trip_and_key_errors(tmp_path, tiny_arch):
    state = mmdet_state_dict(tiny_arch)
    path = str(tmp_path / "tiny.pth")
    meta = {"dataset_meta": {"classes": ["a", "b", "c", "d"]}}
    write_torch_checkpoint(path, {"meta": meta, "state_dict": state})
    model = from_mmdet(path, architecture="tiny", progress=False)
    assert model.num_classes == 4 and model.class_names == ["a", "b", "c", "d"]
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    expected, got = tiny_arch(x), model(x)
    for key in expected:
        np.testing.assert_allclose(
            np.asarray(got[key]), np.asarray(expected[key]), atol=1e-5
        )

    fresh = tiny_model(num_classes=4)
    missing = {k: v for k, v in state.items() if k != "neck.fpn_convs.0.conv.bias"}
    with pytest.raises(ValueError, match=r"neck\.fpn_convs\.0\.conv\.bias"):
        load_mmdet_state_dict(fresh, missing)
    extra = dict(state, **{"mask_head.unknown.weight": np.zeros(3, np.float32)})
    with pytest.raises(
        ValueError, match=r"unexpected keys.*mask_head\.unknown\.weight"
    ):
        load_mmdet_state_dict(fresh, extra)
    wrong = dict(state, **{"mask_head.conv_kernel.bias": np.zeros(3, np.float32)})
    with pytest.raises(
        ValueError, match=r"mask_head\.conv_kernel\.bias: checkpoint \(3,\)"
    ):
        load_mmdet_state_dict(fresh, wrong)


def test_original_solo_key_names(tiny_arch):
    state = mmdet_state_dict(tiny_arch)
    renamed = {}
    for key, value in state.items():
        key = key.replace("mask_head.cls_convs.", "bbox_head.cate_convs.")
        key = key.replace("mask_head.kernel_convs.", "bbox_head.kernel_convs.")
        key = key.replace("mask_head.conv_cls.", "bbox_head.solo_cate.")
        key = key.replace("mask_head.conv_kernel.", "bbox_head.solo_kernel.")
        key = key.replace(
            "mask_head.mask_feature_head.conv_pred.", "mask_feat_head.conv_pred.0."
        )
        key = key.replace("mask_head.mask_feature_head.", "mask_feat_head.")
        renamed[key] = value
    model = tiny_model(num_classes=4)
    report = load_mmdet_state_dict(model, renamed)
    assert report["assigned"] == len(target_variables(model))


def test_preset_directory_round_trip(tmp_path):
    model = tiny_model(num_classes=3, class_names=["x", "y", "z"], test_scale=(96, 64))
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    assert sorted(os.listdir(preset)) == [
        "config.json",
        "metadata.json",
        "model.weights.h5",
    ]
    loaded = keras_solov2.SOLOv2.from_preset(preset)
    assert loaded.class_names == ["x", "y", "z"]
    images = np.random.default_rng(1).integers(0, 255, (1, 50, 60, 3)).astype("uint8")
    a, b = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # Fine-tuning head: everything but the classifier is kept.
    tuned = keras_solov2.SOLOv2.from_preset(preset, num_classes=5)
    assert tuned.num_classes == 5 and tuned.class_names is None
    for source, target in zip(
        model.backbone.weights, tuned.backbone.weights, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(source), np.asarray(target))
    assert tuned.get_layer("conv_cls").kernel.shape[-1] == 5
    with pytest.raises(ValueError, match="Unknown SOLOv2 preset"):
        keras_solov2.SOLOv2.from_preset(str(tmp_path / "missing"))


def test_download_verify_convert_and_cache(tmp_path, monkeypatch, tiny_arch):
    source = tmp_path / "solov2_tiny-abc.pth"
    write_torch_checkpoint(str(source), {"state_dict": mmdet_state_dict(tiny_arch)})
    digest = preset_utils.sha256sum(str(source))
    spec = {
        "architecture": "tiny",
        "url": source.as_uri(),  # file:// exercises the real download path
        "sha256": digest,
        "num_classes": 4,
        "class_names": ("a", "b", "c", "d"),
        "category_ids": (3, 5, 8, 9),
        "coco_mask_ap": None,
        "description": "test",
    }
    monkeypatch.setitem(solov2_presets.PRESETS, "tiny_coco", spec)
    monkeypatch.setenv("KERAS_SOLOV2_CACHE", str(tmp_path / "cache"))
    model = keras_solov2.SOLOv2.from_preset("tiny_coco")
    assert model.class_names == ["a", "b", "c", "d"]
    assert model.category_ids == [3, 5, 8, 9]  # evaluation maps labels to these
    cached = tmp_path / "cache" / "presets" / "tiny_coco"
    assert (cached / "model.weights.h5").exists()
    # The second call reads the cache, even with the source gone.
    source.unlink()
    again = keras_solov2.SOLOv2.from_preset("tiny_coco", num_classes=2)
    assert again.num_classes == 2
    assert again.class_names is None and again.category_ids is None  # new head
    # Settings overrides apply to the loaded model without rebuilding it.
    tuned = keras_solov2.SOLOv2.from_preset("tiny_coco", score_threshold=0.4)
    assert tuned.decoder.score_threshold == 0.4 and tuned.category_ids == [3, 5, 8, 9]


def test_wrong_hash_and_no_network_errors(tmp_path, monkeypatch, tiny_arch):
    source = tmp_path / "solov2_tiny-abc.pth"
    write_torch_checkpoint(str(source), {"state_dict": mmdet_state_dict(tiny_arch)})
    monkeypatch.setenv("KERAS_SOLOV2_CACHE", str(tmp_path / "cache"))
    spec = {
        "architecture": "tiny",
        "url": source.as_uri(),
        "sha256_prefix": "00000000",
        "class_names": ("a", "b", "c", "d"),
        "category_ids": (3, 5, 8, 9),
    }
    monkeypatch.setitem(solov2_presets.PRESETS, "tiny_coco", spec)
    with pytest.raises(ValueError, match="does not match"):
        keras_solov2.SOLOv2.from_preset("tiny_coco")
    download = tmp_path / "cache" / "downloads" / "solov2_tiny-abc.pth"
    assert not download.exists()  # a bad download is not kept
    spec["url"] = (tmp_path / "nowhere.pth").as_uri()
    with pytest.raises(OSError, match="download that file by hand and put it at"):
        keras_solov2.SOLOv2.from_preset("tiny_coco")


def test_cli_convert(tmp_path, tiny_arch, capsys):
    from keras_solov2.app.cli import main

    path = str(tmp_path / "tiny.pth")
    write_torch_checkpoint(path, {"state_dict": mmdet_state_dict(tiny_arch)})
    output = str(tmp_path / "preset")
    assert main(["convert", path, "--architecture", "tiny", "--output", output]) == 0
    assert "Wrote preset" in capsys.readouterr().out
    loaded = keras_solov2.SOLOv2.from_preset(output)
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(loaded(x)["kernels"]), np.asarray(tiny_arch(x)["kernels"]), atol=1e-5
    )
    with pytest.raises(SystemExit):
        main(["convert", path, "--architecture", "r99", "--output", output])


def test_class_names_of_the_wrong_count_are_reported(tmp_path, tiny_arch):
    path = str(tmp_path / "tiny.pth")
    meta = {"dataset_meta": {"classes": ["a", "b", "c"]}}  # the classifier has 4
    write_torch_checkpoint(
        path, {"meta": meta, "state_dict": mmdet_state_dict(tiny_arch)}
    )
    with pytest.warns(UserWarning, match=r"lists 3 class names.*has 4 classes") as w:
        model = from_mmdet(path, architecture="tiny", progress=False)
    assert path in str(w[0].message)
    assert model.num_classes == 4 and model.class_names is None
    # mmdetection 2.x / SOLO keep them in meta["CLASSES"].
    write_torch_checkpoint(
        path,
        {
            "meta": {"CLASSES": ("a", "b", "c", "d")},
            "state_dict": mmdet_state_dict(tiny_arch),
        },
    )
    assert from_mmdet(path, architecture="tiny", progress=False).class_names == [
        "a",
        "b",
        "c",
        "d",
    ]


def test_a_file_without_a_known_hash_is_refused(tmp_path):
    source = tmp_path / "weights.pth"
    source.write_bytes(b"some bytes")
    with pytest.raises(ValueError, match=re.escape(f"{source}: no sha256")):
        preset_utils.verify_sha256(str(source))
    with pytest.raises(ValueError, match="no sha256"):
        preset_utils.verify_sha256(str(source), sha256="", sha256_prefix="")
    digest = preset_utils.sha256sum(str(source))
    assert preset_utils.verify_sha256(str(source), sha256_prefix=digest[:8]) == digest
    # download checks it before fetching anything.
    target = tmp_path / "cache" / "weights.pth"
    with pytest.raises(ValueError, match=re.escape(f"{target}: no sha256")):
        preset_utils.download(source.as_uri(), str(target), progress=False)
    assert not target.exists() and not target.parent.exists()


def test_coco_presets_carry_the_official_categories():
    """Names and ids in label order, against a real COCO 2017 json."""
    with open(COCO_JSON) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    assert len(categories) == 80
    ids = [c["id"] for c in categories]
    names = [c["name"] for c in categories]
    assert list(solov2_presets.COCO_CATEGORY_IDS) == ids
    assert list(solov2_presets.COCO_CLASS_NAMES) == names
    for name, spec in solov2_presets.PRESETS.items():
        assert spec["num_classes"] == 80, name
        assert list(spec["category_ids"]) == ids, name
        assert list(spec["class_names"]) == names, name
        # Every download is checked: the prefix is the one in the file name.
        assert spec["url"].endswith(f"-{spec['sha256_prefix']}.pth"), name
