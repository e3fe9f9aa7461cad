"""Image files: EXIF orientation, broken files, skip-and-report, caching.

The expected images come from PIL (`ImageOps.exif_transpose`), the expected
masks from pycocotools; the stored pixels of the rotated files are built with
numpy rotations written out here.
"""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from helpers import FIXTURES
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

from keras_solov2.data import CocoDataset, read_tfrecords, write_tfrecords
from keras_solov2.data.images import ImageError, inspect_image

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)

FIXTURE = FIXTURES / "coco_mini"
ANN_FILE = FIXTURE / "annotations" / "instances_val2017.json"
IMAGE_DIR = FIXTURE / "val2017"
LEVEL = 1.0  # one step of the 0..255 grid
H, W = 64, 96  # displayed size of the synthetic photos
TRIANGLE = [10.0, 8.0, 80.0, 12.0, 30.0, 55.0]  # displayed coordinates


def _displayed():
    """A smooth, asymmetric test picture (so every turn is visible)."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x * 2.5, y * 3.5, (x + 2 * y) % 97 * 2.0], axis=-1)
    image[5:20, 60:90] = (250, 20, 20)
    return image.clip(0, 255).astype(np.uint8)


def _stored(displayed, orientation):
    """Pixels a camera stores so that the tag `orientation` displays them."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, 1),  # shown turned 90 degrees clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, -1),
    }[orientation](displayed)


def _save_photo(path, orientation):
    stored = np.ascontiguousarray(_stored(_displayed(), orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=exif.tobytes())


def _photo_json(path, files, height=H, width=W):
    images, annotations = [], []
    for k, name in enumerate(files, start=1):
        images.append({"id": k, "file_name": name, "height": height, "width": width})
        annotations.append(
            {
                "id": 100 + k,
                "image_id": k,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": [TRIANGLE],
                "bbox": [10.0, 8.0, 70.0, 47.0],
                "area": 1.0,
            }
        )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "triangle"}],
    }
    path.write_text(json.dumps(data))
    return str(path)


def _first(ds):
    images, targets = next(iter(ds))
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    name = f"photo{orientation}.jpg"
    _save_photo(tmp_path / name, orientation)
    with Image.open(tmp_path / name) as pil:
        expected = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"), np.float64)
    # The test's own construction: the displayed picture is the original.
    assert expected.shape == (H, W, 3)
    assert np.abs(expected - _displayed()).mean() < 4

    data = CocoDataset(_photo_json(tmp_path / "ann.json", [name]), str(tmp_path))
    images, targets = _first(
        data.as_tf_dataset(
            batch_size=1, image_size=(H, W), training=False, mask_targets="full"
        )
    )
    np.testing.assert_allclose(images[0], expected, rtol=0, atol=LEVEL * 1.01)
    rle = mask_utils.frPyObjects([TRIANGLE], H, W)
    np.testing.assert_array_equal(
        targets["masks"][0, 0], mask_utils.decode(rle)[..., 0]
    )


def test_orientation_mismatch_messages(tmp_path):
    _save_photo(tmp_path / "p.jpg", 6)  # stored 96x64, displayed 64x96
    stored_size = _photo_json(tmp_path / "stored.json", ["p.jpg"], W, H)
    with pytest.raises(ImageError, match=r"p\.jpg.*EXIF orientation 6.*=False"):
        CocoDataset(stored_size, str(tmp_path), check_images=True)
    # Annotated on the stored pixels: the opt-out reads them unturned.
    data = CocoDataset(stored_size, str(tmp_path), apply_exif_orientation=False)
    images, _ = _first(
        data.as_tf_dataset(
            batch_size=1, image_size=(W, H), training=False, mask_targets="full"
        )
    )
    with Image.open(tmp_path / "p.jpg") as pil:
        stored = np.asarray(pil.convert("RGB"), np.float64)
    np.testing.assert_allclose(images[0], stored, atol=LEVEL * 1.01)
    displayed_size = _photo_json(tmp_path / "displayed.json", ["p.jpg"])
    data = CocoDataset(displayed_size, str(tmp_path), apply_exif_orientation=False)
    ds = data.as_tf_dataset(
        batch_size=1, image_size=(H, W), training=False, mask_targets="full"
    )
    with pytest.raises(tf.errors.OpError, match=r"p\.jpg.*swapped"):
        _first(ds)


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


BREAKERS = {
    "truncated": (_truncate, "truncated JPEG"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "not_an_image": (lambda p: p.write_text("<html>404</html>"), "not a JPEG"),
    "bad_marker": (
        # A 0-byte segment after SOI + APP0 marker, then garbage.
        lambda p: p.write_bytes(p.read_bytes()[:4] + b"\x00\x02" + b"\x12" * 64),
        "corrupt JPEG",
    ),
}


def _two_images(tmp_path):
    """The fixture json cut to its first two images, files copied."""
    data = json.loads(ANN_FILE.read_text())
    data["images"] = data["images"][:2]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    for image in data["images"]:
        shutil.copy(IMAGE_DIR / image["file_name"], tmp_path / image["file_name"])
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return str(ann), data


@pytest.mark.parametrize("kind", sorted(BREAKERS))
def test_broken_image_fails_fast_naming_the_file(tmp_path, kind):
    breaker, reason = BREAKERS[kind]
    ann, data = _two_images(tmp_path)
    bad = data["images"][1]["file_name"]
    breaker(tmp_path / bad)
    with pytest.raises(ValueError) as raised:
        inspect_image((tmp_path / bad).read_bytes())
    assert reason in str(raised.value)

    # Default: found when read, the error names the file and the fix.
    lazy = CocoDataset(ann, str(tmp_path)).as_tf_dataset(
        batch_size=2, image_size=(320, 320), training=False, mask_targets="full"
    )
    with pytest.raises(tf.errors.OpError, match=rf"{bad}.*{reason}.*on_invalid='skip'"):
        _first(lazy)
    # Checked up front.
    with pytest.raises(ImageError, match=rf"{bad}.*{reason}"):
        CocoDataset(ann, str(tmp_path), check_images=True, progress=False)


@pytest.mark.parametrize("kind", ["truncated", "missing"])
def test_skip_mode_leaves_out_and_reports_bad_images(tmp_path, kind):
    ann, data = _two_images(tmp_path)
    bad_image = data["images"][0]
    if kind == "missing":
        (tmp_path / bad_image["file_name"]).unlink()
        reason = "missing_file"
    else:
        _truncate(tmp_path / bad_image["file_name"])
        reason = "unreadable_image"
    with pytest.warns(UserWarning, match=r"1 image\(s\).*were skipped"):
        dataset = CocoDataset(ann, str(tmp_path), on_invalid="skip", progress=False)
    assert dataset.stats["skipped_images"][reason] == 1
    assert sum(dataset.stats["skipped_images"].values()) == 1
    assert [s[1] for s in dataset.skipped_images] == [bad_image["file_name"]]
    assert dataset.image_ids == [data["images"][1]["id"]]
    assert dataset.stats["images"] == 1

    # Every non-crowd annotation reaches the batches or the report.
    non_crowd = [a for a in data["annotations"] if not a["iscrowd"]]
    of_bad = [a for a in non_crowd if a["image_id"] == bad_image["id"]]
    assert len(of_bad) > 0
    assert dataset.stats["skipped"]["image_skipped"] == len(of_bad)
    skipped_ids = {s[0] for s in dataset.skipped_annotations}
    assert skipped_ids == {a["id"] for a in of_bad}
    _, targets = _first(
        dataset.as_tf_dataset(
            batch_size=1,
            image_size=(640, 640),
            training=False,
            max_instances=100,
            mask_targets="full",
        )
    )
    assert (targets["labels"] >= 0).sum() == len(non_crowd) - len(skipped_ids)


def test_tfrecords_carry_the_orientation(tmp_path):
    names = []
    for orientation in (1, 3, 6, 8):
        names.append(f"photo{orientation}.jpg")
        _save_photo(tmp_path / names[-1], orientation)
    data = CocoDataset(_photo_json(tmp_path / "ann.json", names), str(tmp_path))
    write_tfrecords(data, str(tmp_path / "rec"), num_shards=2, progress=False)
    kwargs = dict(batch_size=4, image_size=(H, W), training=False)
    got_images, got = _first(
        read_tfrecords(str(tmp_path / "rec-*"), **kwargs, mask_targets="full")
    )
    want_images, want = _first(data.as_tf_dataset(**kwargs, mask_targets="full"))
    np.testing.assert_allclose(got_images, want_images, atol=1e-5)
    np.testing.assert_array_equal(got["masks"], want["masks"])
    for k, name in enumerate(names):
        with Image.open(tmp_path / name) as pil:
            shown = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"), np.float64)
        np.testing.assert_allclose(got_images[k], shown, rtol=0, atol=LEVEL * 1.01)


def test_tfrecord_truncation_is_warned_and_counted(tmp_path):
    dataset = CocoDataset(str(ANN_FILE), str(IMAGE_DIR))
    write_tfrecords(dataset, str(tmp_path / "val"), num_shards=2, progress=False)
    data = json.loads(ANN_FILE.read_text())
    per_image = [
        sum(
            1
            for a in data["annotations"]
            if a["image_id"] == im["id"] and not a["iscrowd"]
        )
        for im in data["images"]
    ]
    cap = 4
    expected = [max(n - cap, 0) for n in per_image]
    assert sum(expected) > 0
    with pytest.warns(UserWarning, match=rf"max_instances={cap}: {sum(expected)} "):
        ds = read_tfrecords(
            str(tmp_path / "val-*"),
            batch_size=len(per_image),
            image_size=(640, 640),
            max_instances=cap,
            training=False,
            return_counts=True,
            mask_targets="full",
        )
    _, targets, counts = next(iter(ds))
    np.testing.assert_array_equal(counts["truncated"].numpy(), expected)
    np.testing.assert_array_equal(
        (targets["labels"].numpy() >= 0).sum(axis=1), np.minimum(per_image, cap)
    )


def test_cache_keeps_batches_and_fresh_augmentation(tmp_path):
    dataset = CocoDataset(str(ANN_FILE), str(IMAGE_DIR))
    write_tfrecords(dataset, str(tmp_path / "val"), num_shards=2, progress=False)
    kwargs = dict(
        batch_size=5,
        image_size=(352, 352),
        scales=[(352, 288), (320, 224)],
        max_instances=40,
        seed=3,
    )
    epochs = {}
    for name, make in {
        "coco": lambda c: dataset.as_tf_dataset(cache=c, **kwargs, mask_targets="full"),
        "coco_file": lambda c: dataset.as_tf_dataset(
            cache=str(tmp_path / "cache") if c else False, **kwargs, mask_targets="full"
        ),
        "tfrecord": lambda c: read_tfrecords(
            str(tmp_path / "val-*"), cache=c, **kwargs, mask_targets="full"
        ),
    }.items():
        for cached in (False, True):
            ds = make(cached)
            epochs[name, cached] = [_first(ds) for _ in range(2)]
    for name in ("coco", "coco_file", "tfrecord"):
        plain, cached = epochs[name, False], epochs[name, True]
        # TFRecords: the cache keeps the first epoch's shard order, while an
        # uncached epoch shuffles the shards anew, so only epoch 1 must agree.
        same = plain[:1] if name == "tfrecord" else plain
        for (pi, pt), (ci, ct) in zip(same, cached[: len(same)], strict=True):
            np.testing.assert_array_equal(pi, ci)
            np.testing.assert_array_equal(pt["masks"], ct["masks"])
        # The second epoch is augmented (and shuffled) anew.
        assert not np.array_equal(cached[0][0], cached[1][0])


def test_cached_tfrecords_reshuffle_records_after_the_first_epoch(tmp_path):
    # Whatever the shard order of the first epoch, the cached epochs hold
    # every record once, in a new order.
    dataset = CocoDataset(str(ANN_FILE), str(IMAGE_DIR))
    write_tfrecords(dataset, str(tmp_path / "val"), num_shards=2, progress=False)
    ds = read_tfrecords(
        str(tmp_path / "val-*"),
        batch_size=len(dataset),
        image_size=(352, 352),
        scales=[(352, 288)],
        flip_probability=0.0,
        cache=True,
        seed=3,
        mask_targets="full",
    )
    firsts = []
    for _ in range(3):
        images, _ = next(iter(ds))
        firsts.append(images.numpy().reshape(len(dataset), -1).sum(axis=1))
    for sums in firsts[1:]:
        np.testing.assert_allclose(np.sort(sums), np.sort(firsts[0]), rtol=1e-6)
    assert not all(np.array_equal(firsts[0], sums) for sums in firsts[1:])


def test_cli_skips_and_reports_a_truncated_image(tmp_path, capsys):
    from keras_solov2.app.cli import main

    ann, data = _two_images(tmp_path)
    _truncate(tmp_path / data["images"][0]["file_name"])
    prefix = str(tmp_path / "out" / "d")
    command = ["data", "to-tfrecord", ann, str(tmp_path), "--output", prefix]
    # A user error: one line naming the file, exit status 2, no traceback.
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and data["images"][0]["file_name"] in err[0], err
    assert "ImageError" in err[0] and "Traceback" not in err[0]
    with pytest.raises(ImageError, match=data["images"][0]["file_name"]):
        main(["--verbose", *command])
    assert list((tmp_path / "out").iterdir()) == []  # no partial shards
    with pytest.warns(UserWarning, match="skipped"):
        main([*command, "--shards", "1", "--skip-invalid"])
    out = capsys.readouterr().out
    assert "Wrote 1 shards (1 images)" in out
    assert "'unreadable_image': 1" in out
    ds = read_tfrecords(
        prefix + "-*", batch_size=1, image_size=(640, 640), mask_targets="full"
    )
    assert len(list(ds)) == 1


def test_bad_orientation_tag_is_reported_and_ignored(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 9  # not an orientation
    Image.fromarray(_displayed()).save(
        tmp_path / "odd.jpg", "JPEG", quality=95, exif=exif.tobytes()
    )
    data = CocoDataset(_photo_json(tmp_path / "ann.json", ["odd.jpg"]), str(tmp_path))
    with pytest.warns(UserWarning, match=r"odd\.jpg.*orientation 9 is not 1\.\.8"):
        assert data.image_orientation(0) == 1
    with Image.open(tmp_path / "odd.jpg") as pil:
        stored = np.asarray(pil.convert("RGB"), np.float64)
    images, _ = _first(
        data.as_tf_dataset(
            batch_size=1, image_size=(H, W), training=False, mask_targets="full"
        )
    )
    np.testing.assert_allclose(images[0], stored, atol=LEVEL * 1.01)
