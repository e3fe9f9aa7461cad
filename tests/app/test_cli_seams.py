"""Seams a new user broke (issue 22): bad input gets one line that names the
file, annotation id or flag, exit status 2, skips are counted, nothing hangs.

These cases run `keras_solov2.app.cli.main` in this process; the hang needs
fresh interpreters, since it happened at interpreter exit: it is in
test_cli_seams_hang.py."""

import csv
import json
import os
import urllib.request

import cli_seams_data
import keras
import pytest
from cli_seams_data import BAD
from helpers import tiny_model

from keras_solov2.app import cli
from keras_solov2.export import common

# The module-scoped fixture of cli_seams_data.py: one per test file.
data = cli_seams_data.data


def without_bad_image(annotations):
    """The COCO json without image 3 (the truncated one) and its annotations."""
    with open(annotations) as f:
        coco = json.load(f)
    coco["images"] = [i for i in coco["images"] if i["id"] != 3]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 3]
    return coco


def error_line(capsys):
    """The one stderr line of an error; fails on more lines or a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("keras-solov2 "), lines
    return lines[0]


# --------------------------------------------------- 2. predict over a folder
def test_predict_names_the_truncated_file_or_skips_and_lists_it(data, tmp_path, capsys):
    root, _, images = data
    args = ["predict", str(root / "preset"), images, "--score-threshold", "0.0"]
    assert cli.main([*args, "--output", str(tmp_path / "raise")]) == 2
    line = error_line(capsys)
    assert os.path.join(images, BAD) in line and "truncated" in line, line
    assert "--on-invalid skip" in line

    output = tmp_path / "skip"
    with pytest.warns(UserWarning) as record:
        status = cli.main([*args, "--output", str(output), "--on-invalid", "skip"])
    assert status == 0
    warnings = [str(w.message) for w in record if BAD in str(w.message)]
    assert len(warnings) == 1 and os.path.join(images, BAD) in warnings[0], warnings
    assert "1 of 5 images" in warnings[0] and "truncated" in warnings[0]
    captured = capsys.readouterr()
    assert "4 images" in captured.out and "1 unreadable images skipped" in captured.out
    written = sorted(p for p in os.listdir(output) if p.endswith(".json"))
    assert written == [f"00000{i}.json" for i in (1, 2, 4, 5)]


# ----------------------------- 3. evaluate checks annotations as train does
@pytest.fixture(scope="module")
def invalid_annotations(data):
    """The shapes json (image 3 left out) with an unknown category_id on one
    annotation and a negative bbox width on another."""
    root, annotations, _ = data
    coco = without_bad_image(annotations)
    unknown, bad_box = coco["annotations"][0], coco["annotations"][1]
    unknown["category_id"] = 99
    bad_box["bbox"][2] = -1.0
    path = root / "invalid.json"
    path.write_text(json.dumps(coco))
    return str(path), unknown["id"], bad_box


def test_evaluate_and_train_stop_on_the_same_annotation(
    data, invalid_annotations, tmp_path, capsys
):
    root, _, images = data
    path, unknown_id, _ = invalid_annotations
    preset = str(root / "preset")
    assert cli.main(["evaluate", preset, path, images, "--output", str(tmp_path)]) == 2
    evaluate_line = error_line(capsys)
    assert cli.main(["train", path, images, "--model", preset,
                     "--output", str(tmp_path / "run")]) == 2  # fmt: skip
    train_line = error_line(capsys)
    for line in (evaluate_line, train_line):
        assert f"Annotation id {unknown_id} " in line, line
        assert "unknown category_id 99" in line and "--on-invalid skip" in line
    assert evaluate_line.split(": ", 2)[2] == train_line.split(": ", 2)[2]


def test_evaluate_on_invalid_skip_counts_and_leaves_them_out(
    data, invalid_annotations, tmp_path, capsys
):
    root, _, images = data
    path, unknown_id, bad_box = invalid_annotations
    output = tmp_path / "eval"
    with pytest.warns(UserWarning) as record:
        status = cli.main(["evaluate", str(root / "preset"), path, images,
                           "--output", str(output),
                           "--on-invalid", "skip"])  # fmt: skip
    assert status == 0
    warnings = [str(w.message) for w in record if "annotation(s)" in str(w.message)]
    assert len(warnings) == 1, warnings
    assert "2 annotation(s)" in warnings[0]
    assert "'unknown_category_id': 1" in warnings[0]
    assert f"{bad_box['id']} (invalid_bbox)" in warnings[0], warnings
    # The ground truth evaluated lacks the bad box (the unknown category has
    # no row): per_class_ap.csv counts one instance fewer than the json.
    with open(path) as f:
        coco = json.load(f)
    in_json = sum(
        1 for a in coco["annotations"] if a["category_id"] == bad_box["category_id"]
    )
    with open(output / "per_class_ap.csv", newline="") as f:
        rows = {int(r["category_id"]): int(r["instances"]) for r in csv.DictReader(f)}
    assert rows[bad_box["category_id"]] == in_json - 1


# ------------------------------------------- 4. a .keras that is not ours
@pytest.fixture(scope="module")
def foreign_keras(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    sequential.save(str(root / "other.keras"))
    (root / "text.keras").write_text("not a zip archive")
    return root


@pytest.mark.parametrize("name", ["other.keras", "text.keras"])
@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_a_keras_file_that_is_not_a_solov2_is_one_line(
    data, foreign_keras, tmp_path, capsys, command, name
):
    _, annotations, images = data
    model = str(foreign_keras / name)
    args = {
        "predict": ["predict", model, images],
        "evaluate": ["evaluate", model, annotations, images],
        "export": ["export", model, "--format", "tflite"],
    }[command]
    output = str(tmp_path / ("m.tflite" if command == "export" else "out"))
    assert cli.main([*args, "--output", output]) == 2
    line = error_line(capsys)
    assert repr(model) in line and "SOLOv2" in line, line
    expected = "holds a Sequential" if name == "other.keras" else "not a Keras model"
    assert expected in line, line


# ----------------------------------------------------- 5. export sidecars
def test_a_tflite_and_an_onnx_of_one_stem_keep_their_own_json(tmp_path):
    model = tiny_model()
    for file_format in ("tflite", "onnx"):
        common.write_metadata(model, str(tmp_path / f"m.{file_format}"),
                              file_format, (64, 96), True)  # fmt: skip
    for file_format in ("tflite", "onnx"):
        with open(tmp_path / f"m.{file_format}.json") as f:
            assert json.load(f)["format"] == f"keras_solov2.{file_format}/1"
        metadata, _ = common.read_metadata(str(tmp_path / f"m.{file_format}"),
                                           file_format)  # fmt: skip
        assert metadata["format"] == f"keras_solov2.{file_format}/1"


@pytest.fixture
def web_case(tmp_path):
    """A built page, a `.tflite` with the TFL3 identifier and an end-to-end
    JSON written by `write_metadata`."""
    page = tmp_path / "page"
    page.mkdir()
    (page / "index.html").write_text("<!doctype html>")
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"\x1c\0\0\0TFL3" + bytes(64))
    common.write_metadata(tiny_model(), str(tflite), "tflite", (64, 96), True)
    return tflite, page


def test_web_checks_the_model_and_its_json_before_serving(web_case, capsys):
    tflite, page = web_case
    sidecar = tflite.parent / "m.tflite.json"
    end_to_end = sidecar.read_text()

    def web_error():
        assert cli.main(["web", str(tflite), "--port", "0", "--page", str(page)]) == 2
        return error_line(capsys)

    # The stem's JSON of an earlier export, overwritten by an .onnx export.
    sidecar.unlink()
    onnx_json = json.loads(end_to_end) | {"format": "keras_solov2.onnx/1"}
    (tflite.parent / "m.json").write_text(json.dumps(onnx_json))
    assert "No m.tflite.json beside" in web_error()
    sidecar.write_text(json.dumps(onnx_json))
    line = web_error()
    assert "m.tflite.json is not the JSON" in line and "'keras_solov2.onnx/1'" in line
    sidecar.write_text(json.dumps(json.loads(end_to_end) | {"outputs": ["kernels"]}))
    assert "--no-postprocessing" in web_error()
    sidecar.write_text(end_to_end)
    tflite.write_bytes(b"PK\3\4 a zip, not a flatbuffer")
    assert "is not a TFLite model" in web_error()


# ------------------------------------------ 6. errors name the flag typed
def note_and_error_lines(capsys):
    """The deprecation note and the error line of `--image-size`."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and "Traceback" not in err, err
    assert "note: --image-size is deprecated" in lines[0], lines
    return lines


@pytest.mark.parametrize("old", [False, True], ids=["new_flags", "image_size"])
def test_size_errors_name_the_flag_typed(data, tmp_path, capsys, old):
    """`train --scale` and `export --input-size`, or `--image-size`, their
    deprecated name for one release: a note, then an error in its words."""
    root, annotations, images = data
    train = ["train", annotations, images, "--model", str(root / "preset"),
             "--output", str(tmp_path / "run")]  # fmt: skip
    flag = "--image-size" if old else "--scale"
    assert cli.main([*train, flag, "0", "384"]) == 2
    if old:
        note, line = note_and_error_lines(capsys)
        assert "it is --scale now" in note, note
    else:
        line = error_line(capsys)
    assert f"{flag} 0 384" in line, line
    assert not os.path.exists(tmp_path / "run")
    export = ["export", str(root / "preset"), "--format", "tflite",
              "--output", str(tmp_path / "m.tflite")]  # fmt: skip
    flag = "--image-size" if old else "--input-size"
    assert cli.main([*export, flag, "16", "16"]) == 2
    line = note_and_error_lines(capsys)[1] if old else error_line(capsys)
    assert f"{flag} 16 16" in line and "at least 32" in line, line
    assert not os.path.exists(tmp_path / "m.tflite")
    saved_model = [*export[:3], "saved_model", "--output", str(tmp_path / "sm")]
    assert cli.main([*saved_model, flag, "64", "64"]) == 2
    line = note_and_error_lines(capsys)[1] if old else error_line(capsys)
    assert line.split(": error: ValueError: ")[1].startswith(f"{flag} (tflite")


def test_the_deprecated_size_flag_still_gives_the_size(capsys):
    from keras_solov2.app import commands, parser

    for argv, flag in (
        (["train", "a.json", "images", "--output", "run"], "--scale"),
        (["export", "m.keras", "--format", "tflite", "--output", "m.tflite"],
         "--input-size"),
    ):  # fmt: skip
        new = parser.build_parser().parse_args([*argv, flag, "320", "448"])
        assert commands.size_argument(new, flag) == (flag, [320, 448])
        assert capsys.readouterr().err == ""
        old = parser.build_parser().parse_args([*argv, "--image-size", "320", "448"])
        assert commands.size_argument(old, flag) == ("--image-size", [320, 448])
        assert f"it is {flag} now" in capsys.readouterr().err


def test_the_new_and_the_deprecated_size_flag_together_are_an_error(
    data, tmp_path, capsys
):
    root, annotations, images = data
    train = ["train", annotations, images, "--model", str(root / "preset"),
             "--output", str(tmp_path / "run"), "--scale", "64", "64",
             "--image-size", "64", "64"]  # fmt: skip
    assert cli.main(train) == 2
    assert "Give --scale only" in error_line(capsys)


# -------------------------------------------------- 7. no empty run folder
def test_a_failed_download_leaves_no_output_folder(data, tmp_path, capsys, monkeypatch):
    _, annotations, images = data
    (tmp_path / "good.json").write_text(json.dumps(without_bad_image(annotations)))
    monkeypatch.setenv("KERAS_SOLOV2_CACHE", str(tmp_path / "empty_cache"))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # no network
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    # urlopen's global opener reads the proxies once, when first built: let
    # it be built (with the dead proxy) only for this test.
    monkeypatch.setattr(urllib.request, "_opener", None)
    output = tmp_path / "run"
    assert cli.main(["train", str(tmp_path / "good.json"), images,
                     "--output", str(output)]) == 2  # fmt: skip
    assert "Could not download" in error_line(capsys)
    assert not output.exists()


def test_the_prediction_grid_passes_over_an_unreadable_image_when_told(
    data, tmp_path, capsys
):
    """train(on_invalid="skip") ends with this grid: it used to raise at the
    very end, after the model was trained and saved."""
    from PIL import Image

    from keras_solov2.evaluation import save_ground_truth_grid
    from keras_solov2.io import ImageError

    _, annotations, images = data
    model = tiny_model(num_classes=4)
    png = str(tmp_path / "grid.png")
    with pytest.raises(ImageError, match=BAD):
        save_ground_truth_grid(model, annotations, images, png, count=4)
    save_ground_truth_grid(model, annotations, images, png, count=4, on_invalid="skip")
    assert f"left out 1 unreadable image(s): {BAD}" in capsys.readouterr().out
    # Four readable images of 64x64, each twice (ground truth, predictions).
    assert Image.open(png).size[1] >= 4 * 64
