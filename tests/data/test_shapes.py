"""Tests for the synthetic-shapes COCO generator."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from keras_solov2.data import generate_shapes_dataset, render_shapes_image

# pycocotools' Cython decoder trips a NumPy 2 deprecation on every call.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


def _ann_to_mask(ann, height, width):
    """Independent decode, following pycocotools' `COCO.annToMask`."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def _read_tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def polygon_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_polygon")
    path = generate_shapes_dataset(str(root), 60, seed=7, max_shapes=6)
    with open(path) as f:
        return root, json.load(f)


def test_layout_and_categories(polygon_dataset):
    root, data = polygon_dataset
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert [c["name"] for c in data["categories"]] == [
        "circle",
        "triangle",
        "square",
        "star",
    ]
    assert len(data["images"]) == 60
    assert [im["id"] for im in data["images"]] == list(range(1, 61))
    for im in data["images"]:
        assert im["file_name"] == f"{im['id']:06d}.jpg"
        with Image.open(root / "images" / im["file_name"]) as pil:
            assert pil.format == "JPEG"
            assert pil.size == (128, 128) and pil.mode == "RGB"
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    for a in data["annotations"]:
        assert a["iscrowd"] == 0
        assert 1 <= a["category_id"] <= 4
        assert isinstance(a["segmentation"], list)  # polygon mode


@pytest.mark.parametrize("mask_format", ["polygon", "rle"])
def test_annotations_equal_rendered_visible_masks(tmp_path, mask_format):
    kwargs = dict(seed=3, max_shapes=6, image_size=(96, 128))
    path = generate_shapes_dataset(str(tmp_path), 40, mask_format=mask_format, **kwargs)
    with open(path) as f:
        data = json.load(f)
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    occluded = 0
    for im in data["images"]:
        assert (im["height"], im["width"]) == (96, 128)
        anns = by_image.get(im["id"], [])
        pixels, shapes = render_shapes_image(im["id"] - 1, **kwargs)
        assert len(anns) == len(shapes) >= 1
        # Occlusion recomputed here: visible = full minus every later shape.
        covered = np.zeros((96, 128), bool)
        for s in reversed(shapes):
            np.testing.assert_array_equal(s["visible_mask"], s["full_mask"] & ~covered)
            covered |= s["full_mask"]
        for ann, s in zip(anns, shapes, strict=True):
            assert ann["category_id"] == s["label"] + 1
            visible = s["visible_mask"]
            if mask_format == "rle":
                assert isinstance(ann["segmentation"], dict)
            decoded = _ann_to_mask(ann, 96, 128)
            np.testing.assert_array_equal(decoded, visible)
            assert ann["area"] == int(visible.sum())
            assert visible.sum() >= max(16, 0.25 * s["full_mask"].sum())
            ys, xs = np.nonzero(visible)
            assert ann["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            occluded += int(visible.sum() < s["full_mask"].sum())
        # The JPEG on disk is the rendered image (up to compression).
        with Image.open(os.path.join(tmp_path, "images", im["file_name"])) as pil:
            disk = np.asarray(pil.convert("RGB"), np.float32)
        assert np.abs(disk - pixels).mean() < 4.0
    assert occluded > 5, "occlusion should be common with 6 shapes"
    assert data["info"]["polygon_fallbacks"] == 0


def test_occluded_polygons_with_holes_roundtrip(polygon_dataset):
    _, data = polygon_dataset
    multi_part, with_slit = 0, 0
    for a in data["annotations"]:
        seg = a["segmentation"]
        multi_part += int(len(seg) > 1)
        for poly in seg:
            pts = list(zip(poly[::2], poly[1::2], strict=True))
            with_slit += int(len(set(pts)) < len(pts))
    # Split visible parts and holes (joined by a zero-width slit) both occur
    # and decode exactly (checked against the render in the test above).
    assert multi_part > 0 and with_slit > 0


def test_sizes_cover_a_wide_range(polygon_dataset):
    _, data = polygon_dataset
    sides = [max(a["bbox"][2], a["bbox"][3]) / 128 for a in data["annotations"]]
    assert min(sides) < 0.15 and max(sides) > 0.5


def test_images_are_not_trivial(polygon_dataset):
    root, data = polygon_dataset
    stds = []
    for im in data["images"][:10]:
        with Image.open(root / "images" / im["file_name"]) as pil:
            stds.append(np.asarray(pil, np.float32).std(axis=(0, 1)).mean())
    assert min(stds) > 5.0  # textured backgrounds, not flat colour


def test_deterministic_given_seed(tmp_path):
    a = generate_shapes_dataset(str(tmp_path / "a"), 8, seed=11)
    b = generate_shapes_dataset(str(tmp_path / "b"), 8, seed=11)
    c = generate_shapes_dataset(str(tmp_path / "c"), 8, seed=12)
    tree_a = _read_tree(os.path.dirname(a))
    tree_b = _read_tree(os.path.dirname(b))
    tree_c = _read_tree(os.path.dirname(c))
    assert len(tree_a) == 9
    assert tree_a == tree_b
    assert tree_a["annotations.json"] != tree_c["annotations.json"]
    images = [k for k in tree_a if k.endswith(".jpg")]
    assert all(tree_a[k] != tree_c[k] for k in images)


def test_min_shapes_zero_and_class_subset(tmp_path):
    path = generate_shapes_dataset(
        str(tmp_path),
        30,
        seed=1,
        min_shapes=0,
        max_shapes=2,
        class_names=("hexagon", "ellipse", "rectangle"),
    )
    with open(path) as f:
        data = json.load(f)
    assert [c["name"] for c in data["categories"]] == [
        "hexagon",
        "ellipse",
        "rectangle",
    ]
    annotated = {a["image_id"] for a in data["annotations"]}
    assert len(annotated) < 30  # some images are negatives
    assert {a["category_id"] for a in data["annotations"]} <= {1, 2, 3}


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="mask_format"):
        generate_shapes_dataset(str(tmp_path), 1, mask_format="bitmap")
    with pytest.raises(ValueError, match="class_names"):
        generate_shapes_dataset(str(tmp_path), 1, class_names=("blob",))
    with pytest.raises(ValueError, match="min_size"):
        generate_shapes_dataset(str(tmp_path), 1, min_size=0.8, max_size=0.5)
