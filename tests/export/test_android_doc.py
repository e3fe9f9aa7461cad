"""docs/android.md's tensor table and Kotlin indices match a real export."""

import json
import os
import re

import numpy as np
import pytest
from helpers import REPO, tiny_model

from keras_solov2 import export

litert = pytest.importorskip(
    "ai_edge_litert.interpreter", reason="ai-edge-litert is not installed"
)
DOC = os.path.join(REPO, "docs", "android.md")


def doc_table():
    with open(DOC) as f:
        text = f.read()
    table = text.split("<!-- tensor-table", 1)[1]
    rows = []
    for line in table.splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("kind", "---"):
            continue
        rows.append(
            {
                "kind": cells[0],
                "name": cells[1].strip("`"),
                "shape": json.loads(cells[3].strip("`")),
                "dtype": cells[4],
            }
        )
    return text, rows


@pytest.mark.tflite
def test_android_doc_matches_an_exported_model(tmp_path):
    text, rows = doc_table()
    model = tiny_model()  # max_detections 100, as the doc's example
    path = str(tmp_path / "solov2.tflite")
    export.tflite(model, path, input_size=(448, 608), verbose=False)
    interpreter = litert.Interpreter(model_path=path)
    signature = interpreter.get_signature_list()
    assert list(signature) == ["serving_default"]
    runner = interpreter.get_signature_runner("serving_default")
    tensors = {("input", k): v for k, v in runner.get_input_details().items()} | {
        ("output", k): v for k, v in runner.get_output_details().items()
    }
    documented = {(r["kind"], r["name"]): r for r in rows}
    assert set(documented) == set(tensors)
    for key, row in documented.items():
        assert list(tensors[key]["shape"]) == row["shape"], key
        assert np.dtype(tensors[key]["dtype"]).name == row["dtype"], key
    # The doc lists outputs in the signature's order, and the Kotlin code
    # picks output buffers by those indices.
    outputs = signature["serving_default"]["outputs"]
    assert [r["name"] for r in rows if r["kind"] == "output"] == outputs
    picks = re.findall(r"val (\w+)Out = outputs\[(\d)\]", text)
    assert len(picks) == 6, picks
    for variable, name in picks:
        wanted = {
            "boxes": "boxes",
            "alpha": "input_masks",
            "labels": "labels",
            "masks": "masks",
            "count": "num_detections",
            "scores": "scores",
        }[variable]
        assert outputs[int(name)] == wanted, (variable, name, outputs)
    # The metadata keys that the Kotlin code reads.
    with open(tmp_path / "solov2.tflite.json") as f:
        metadata = json.load(f)
    for key in re.findall(r'meta\.get\w+\("(\w+)"\)', text):
        assert key in metadata, key
    assert metadata["input"]["shape"] == [1, 448, 608, 3]
    assert tuple(metadata["input"]["pad_value"]) == export.PAD_VALUE
    assert "(124, 116, 104)" in text
