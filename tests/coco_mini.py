"""The small COCO fixture the reader tests share (`tests/fixtures/coco_mini`)."""

import json
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "coco_mini"
ANN_FILE = FIXTURE / "annotations" / "instances_val2017.json"
IMAGE_DIR = FIXTURE / "val2017"


def load_json():
    """The fixture's annotations json, as a fresh dict."""
    with open(ANN_FILE) as f:
        return json.load(f)


def write_json(tmp_path, data, name="ann.json"):
    """Writes `data` as `tmp_path/name`; returns the path as a str."""
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)
