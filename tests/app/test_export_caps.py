"""`keras-solov2 export --max-candidates N --pre-nms-top-k N`: the caps of
the exported post-processing, what they cost and what they report."""

import json

import numpy as np
from helpers import detecting_model, run_interpreter

from keras_solov2.app import cli
from keras_solov2.export import common

SIZE = (64, 96)


def export(model_path, output, *flags):
    argv = ["export", model_path, "--format", "tflite", "--output", output,
            "--input-size", *map(str, SIZE), *flags]  # fmt: skip
    return cli.main(argv)


def test_export_caps_reach_the_file_and_its_json(tmp_path):
    """Caps below the crowd of a random model's candidates leave out some
    that could have changed the result, and the file says so per image;
    caps that hold every candidate (129 cells x 3 classes) leave out none."""
    model = detecting_model()
    model.score_threshold = 0.0
    path = str(tmp_path / "m.keras")
    model.save(path)
    image = np.random.default_rng(0).integers(0, 256, (1, *SIZE, 3)).astype("uint8")
    overflow = {}
    for caps in ((8, 4), (387, 387)):
        output = str(tmp_path / f"m-{caps[0]}.tflite")
        flags = ["--max-candidates", str(caps[0]), "--pre-nms-top-k", str(caps[1])]
        assert export(path, output, *flags) == 0
        with open(common.metadata_file(output)) as f:
            metadata = json.load(f)
        assert (metadata["max_candidates"], metadata["pre_nms_top_k"]) == caps
        overflow[caps] = int(run_interpreter(output, image)["candidates_overflow"][0])
    assert overflow[(8, 4)] > 0, overflow
    assert overflow[(387, 387)] == 0, overflow


def test_a_cap_below_one_names_the_flag(tmp_path, capsys):
    path = str(tmp_path / "m.keras")
    detecting_model().save(path)
    output = str(tmp_path / "m.tflite")
    assert export(path, output, "--pre-nms-top-k", "0") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--pre-nms-top-k 0" in lines[0], lines
    assert not (tmp_path / "m.tflite").exists()
