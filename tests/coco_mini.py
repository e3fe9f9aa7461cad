"""The small COCO fixture the reader tests share (`tests/fixtures/coco_mini`)."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

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


def with_portrait(tmp_path):
    """coco_mini plus a portrait image: 000000434204.jpg transposed (500x333)."""
    data = load_json()
    source = next(im for im in data["images"] if im["id"] == 434204)
    with Image.open(IMAGE_DIR / source["file_name"]) as pil:
        pixels = np.asarray(pil.convert("RGB"))
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 0, 2))).save(
        tmp_path / "portrait.png"
    )
    for im in data["images"]:
        (tmp_path / im["file_name"]).symlink_to(IMAGE_DIR / im["file_name"])
    portrait = {
        "id": 7,
        "file_name": "portrait.png",
        "height": source["width"],
        "width": source["height"],
    }
    data["images"].append(portrait)
    for ann in list(data["annotations"]):
        if ann["image_id"] == 434204 and not ann["iscrowd"]:
            x, y, w, h = ann["bbox"]
            swapped = [
                [v for pair in zip(p[1::2], p[0::2], strict=True) for v in pair]
                for p in ann["segmentation"]
            ]
            data["annotations"].append(
                dict(
                    ann,
                    id=ann["id"] + 10**6,
                    image_id=7,
                    bbox=[y, x, h, w],
                    segmentation=swapped,
                )
            )
    path = write_json(tmp_path, data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    pil = {}
    for image_id, info in coco.imgs.items():
        with Image.open(tmp_path / info["file_name"]) as image:
            pil[image_id] = np.asarray(image.convert("RGB"), np.float64)
    return path, coco, pil
