"""Sharded TFRecords: written from `CocoDataset`, read back batch-identical."""

import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from coco_mini import ANN_FILE, IMAGE_DIR
from image_reference import valid_extent

from keras_solov2.data import (
    CocoDataset,
    read_tfrecord_metadata,
    read_tfrecords,
    verify_tfrecords,
    write_tfrecords,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


@pytest.fixture(scope="module")
def dataset():
    return CocoDataset(str(ANN_FILE), str(IMAGE_DIR))


@pytest.fixture(scope="module")
def shards(dataset, tmp_path_factory):
    """`{num_shards: output_prefix}` for 2 and 3 shards."""
    root = tmp_path_factory.mktemp("tfrecords")
    out = {}
    for num_shards in (2, 3):
        prefix = str(root / f"n{num_shards}" / "val")
        paths = write_tfrecords(dataset, prefix, num_shards=num_shards, progress=False)
        assert paths == [
            f"{prefix}-{k:05d}-of-{num_shards:05d}.tfrecord" for k in range(num_shards)
        ]
        assert all(Path(p).stat().st_size > 0 for p in paths)
        out[num_shards] = prefix
    return out


def _batches(ds):
    return [
        (images.numpy(), {k: v.numpy() for k, v in targets.items()})
        for images, targets in ds
    ]


def _assert_same(tfrecord_ds, coco_ds):
    assert tfrecord_ds.element_spec == coco_ds.element_spec
    got, want = _batches(tfrecord_ds), _batches(coco_ds)
    assert len(got) == len(want) > 0
    for (gi, gt), (wi, wt) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gi, wi)
        for key in ("masks", "labels", "boxes"):
            assert gt[key].dtype == wt[key].dtype
            np.testing.assert_array_equal(gt[key], wt[key], err_msg=key)
    return got


@pytest.mark.parametrize(
    "num_shards, kwargs",
    [
        (2, dict(batch_size=2, canvas=(512, 512), scales=[(512, 400), (448, 288)])),
        (3, dict(batch_size=5, canvas=(320, 352), max_instances=30)),
    ],
)
def test_eval_batches_equal_coco_reader(dataset, shards, num_shards, kwargs):
    pattern = f"{shards[num_shards]}-*.tfrecord"
    kwargs = dict(kwargs, training=False, drop_remainder=False)
    got = _assert_same(
        read_tfrecords(pattern, **kwargs, mask_targets="full"),
        dataset.as_tf_dataset(**kwargs, mask_targets="full"),
    )
    # The written (json) order comes back: every instance, in order.
    labels = np.concatenate([t["labels"] for _, t in got])
    for b, index in enumerate(range(len(dataset))):
        want = [inst["label"] for inst in dataset.instances(index)]
        assert labels[b, : len(want)].tolist() == want
        assert (labels[b, len(want) :] == -1).all()


def test_training_draws_equal_coco_reader_without_shuffle(dataset, shards):
    """Same per-image seeds: random scales and flips match too, two epochs."""
    kwargs = dict(
        batch_size=2,
        canvas=(512, 512),
        scales=[(512, 400), (448, 288), (640, 320)],
        max_instances=20,
        training=True,
        shuffle=False,
        seed=5,
        repeat=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # coco's truncation note
        coco_ds = dataset.as_tf_dataset(**kwargs, mask_targets="full").take(5)
    got = _assert_same(
        read_tfrecords(f"{shards[3]}-*", **kwargs, mask_targets="full").take(5), coco_ds
    )
    # The draws really vary: several canvas extents appear.
    extents = {valid_extent(im) for ims, _ in got for im in ims}
    assert len(extents) >= 2


def test_default_canvas_size_divisor_and_misfit_message(dataset, shards):
    pattern = f"{shards[2]}-*"
    kwargs = dict(batch_size=5, scales=[(650, 400)], training=False)
    for size_divisor, side in ((32, 672), (64, 704)):
        ds = read_tfrecords(
            pattern, size_divisor=size_divisor, **kwargs, mask_targets="full"
        )
        assert ds.element_spec[0].shape == (5, side, side, 3)
        _assert_same(
            ds,
            dataset.as_tf_dataset(
                size_divisor=size_divisor, **kwargs, mask_targets="full"
            ),
        )
    with pytest.raises(ValueError, match=r"multiples of `size_divisor` \(64\)"):
        read_tfrecords(
            pattern,
            batch_size=1,
            canvas=(480, 480),
            size_divisor=64,
            mask_targets="full",
        )
    with pytest.raises(ValueError, match="`canvas`.*required without"):
        read_tfrecords(pattern, batch_size=1, mask_targets="full")
    # Shards are checked when read: the message names the canvas that fits.
    misfit = read_tfrecords(
        pattern,
        batch_size=1,
        canvas=(320, 320),
        scales=(640, 480),
        mask_targets="full",
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"\.jpg.*does not fit the 320x320 canvas.*a 640x640 canvas",
    ):
        next(iter(misfit))


def test_metadata_round_trip(dataset, shards):
    meta = read_tfrecord_metadata(shards[3])
    assert meta["class_names"] == dataset.class_names
    assert meta["category_ids"] == dataset.category_ids
    assert meta["category_ids"][79] == 90 and meta["class_names"][79] == "toothbrush"
    assert meta["num_images"] == 5 and meta["num_shards"] == 3
    assert meta["examples_per_shard"] == [2, 2, 1]
    assert meta["stats"]["instances"] == 42 and meta["stats"]["crowd"] == 1
    assert meta["shards"] == [f"val-{k:05d}-of-00003.tfrecord" for k in range(3)]
    # Records carry the image ids and original bytes.
    raw = next(iter(tf.data.TFRecordDataset(f"{shards[3]}-00001-of-00003.tfrecord")))
    ex = tf.train.Example.FromString(raw.numpy()).features.feature
    record = dataset.image_record(1)
    assert ex["image_id"].int64_list.value == [record["id"]]
    assert ex["image"].bytes_list.value[0] == Path(record["path"]).read_bytes()
    assert len(ex["masks"].bytes_list.value) == len(dataset.instances(1))


def _summary(ds, passes=2):
    out = []
    for _ in range(passes):
        for images, targets in ds:
            out.append(
                (images.numpy().sum(axis=(1, 2, 3)), targets["boxes"].numpy().sum())
            )
    return out


def test_shuffled_training_is_deterministic_given_seed(shards):
    kwargs = dict(batch_size=2, canvas=(448, 448), scales=[(448, 320), (384, 256)])
    pattern = f"{shards[2]}-*.tfrecord"
    a = _summary(read_tfrecords(pattern, seed=3, **kwargs, mask_targets="full"))
    b = _summary(read_tfrecords(pattern, seed=3, **kwargs, mask_targets="full"))
    c = _summary(read_tfrecords(pattern, seed=4, **kwargs, mask_targets="full"))
    assert len(a) == 4
    for (ia, ba), (ib, bb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        assert ba == bb
    assert any(
        not np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c, strict=True)
    )
    # A new pass reshuffles / redraws.
    assert any(not np.array_equal(a[i][0], a[i + 2][0]) for i in range(2))


def _with_a_negative(dataset, tmp_path, position):
    """The fixture with image `position` stripped of annotations, as shards."""
    data = json.loads(ANN_FILE.read_text())
    negative = dataset.image_ids[position]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != negative]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(data))
    ds_obj = CocoDataset(str(ann_file), str(IMAGE_DIR))
    write_tfrecords(ds_obj, str(tmp_path / "neg"), num_shards=2, progress=False)
    return ds_obj, data


def test_negative_image_and_truncation(dataset, tmp_path):
    ds_obj, _ = _with_a_negative(dataset, tmp_path, 2)
    kwargs = dict(batch_size=5, canvas=(448, 448), max_instances=5, training=False)
    with pytest.warns(UserWarning, match="max_instances=5"):
        coco_ds = ds_obj.as_tf_dataset(**kwargs, mask_targets="full")
    with pytest.warns(UserWarning, match="max_instances=5: .* instance"):
        tfrecord_ds = read_tfrecords(
            str(tmp_path / "neg-*"), **kwargs, mask_targets="full"
        )
    got = _assert_same(tfrecord_ds, coco_ds)
    assert (got[0][1]["labels"][2] == -1).all()


def test_no_matching_files(tmp_path):
    with pytest.raises(ValueError, match="No TFRecord files"):
        read_tfrecords(
            str(tmp_path / "nothing-*"),
            batch_size=1,
            canvas=(64, 64),
            mask_targets="full",
        )


def test_cli_to_tfrecord(tmp_path, capsys):
    import glob

    from keras_solov2.app.cli import main

    prefix = str(tmp_path / "coco")
    args = ["data", "to-tfrecord", str(ANN_FILE), str(IMAGE_DIR)]
    main([*args, "--output", prefix, "--shards", "2"])
    assert "Wrote 2 shards (5 images)" in capsys.readouterr().out
    assert len(glob.glob(prefix + "-*.tfrecord")) == 2


def test_negatives_can_be_left_out(dataset, tmp_path):
    ds_obj, data = _with_a_negative(dataset, tmp_path, 1)
    kwargs = dict(
        batch_size=1,
        canvas=(448, 448),
        max_instances=100,
        training=False,
        keep_negatives=False,
    )
    coco_ds = ds_obj.as_tf_dataset(**kwargs, mask_targets="full")
    assert ds_obj.stats["negatives_left_out"] == 1
    got = _assert_same(
        read_tfrecords(str(tmp_path / "neg-*"), **kwargs, mask_targets="full"), coco_ds
    )
    assert len(got) == len(data["images"]) - 1
    assert all((targets["labels"] >= 0).any() for _, targets in got)


def _image_positions(ds, reference):
    """Positions in `reference` (a list of images) of the images `ds` yields."""
    found = []
    for images, _ in ds:
        for image in images.numpy():
            matches = [
                k for k, ref in enumerate(reference) if np.array_equal(ref, image)
            ]
            assert len(matches) == 1
            found.append(matches[0])
    return found


@pytest.mark.parametrize(
    "reader, pipelines", [("coco", 2), ("n2", 2), ("n3", 2), ("n2", 3)]
)
def test_input_context_gives_disjoint_shares(dataset, shards, reader, pipelines):
    kwargs = dict(batch_size=1, canvas=(320, 320), training=False, drop_remainder=False)

    def make(context=None):
        if reader == "coco":
            return dataset.as_tf_dataset(
                input_context=context, **kwargs, mask_targets="full"
            )
        prefix = shards[int(reader[1])]
        return read_tfrecords(
            f"{prefix}-*", input_context=context, **kwargs, mask_targets="full"
        )

    reference = [images[0] for images, _ in _batches(make())]
    assert len(reference) == len(dataset)
    shares = [
        _image_positions(
            make(tf.distribute.InputContext(pipelines, k, pipelines)), reference
        )
        for k in range(pipelines)
    ]
    assert all(shares), "every input pipeline gets images"
    assert sorted(p for share in shares for p in share) == list(range(len(dataset)))


def test_remote_file_system_urls(dataset, tmp_path):
    """Annotations, images and shards on a non-local `tf.io.gfile` file system.

    `ram://` stands in for `gs://` or `s3://`: the same code paths (gfile
    open, glob, exists, list_files, TFRecord IO) without a network.
    """
    root = f"ram://keras_solov2_test_{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(f"{root}/images")
    tf.io.gfile.copy(str(ANN_FILE), f"{root}/ann.json")
    for k in range(len(dataset)):
        name = dataset.image_record(k)["file_name"]
        tf.io.gfile.copy(str(IMAGE_DIR / name), f"{root}/images/{name}")
    remote = CocoDataset(f"{root}/ann.json", f"{root}/images", on_invalid="skip")
    assert remote.stats["images"] == len(dataset)
    write_tfrecords(remote, f"{root}/shards/val", num_shards=2, progress=False)
    assert read_tfrecord_metadata(f"{root}/shards/val")["num_images"] == len(dataset)
    kwargs = dict(batch_size=5, canvas=(352, 352), max_instances=30, training=False)
    local = dataset.as_tf_dataset(**kwargs, mask_targets="full")
    _assert_same(remote.as_tf_dataset(**kwargs, mask_targets="full"), local)
    _assert_same(
        read_tfrecords(f"{root}/shards/val-*", **kwargs, mask_targets="full"), local
    )


def test_verify_names_the_damaged_shard(dataset, tmp_path, capsys):
    from keras_solov2.app.cli import main

    prefix = str(tmp_path / "v")
    paths = write_tfrecords(dataset, prefix, num_shards=3, progress=False)
    names = [os.path.basename(p) for p in paths]
    assert verify_tfrecords(prefix, progress=False) == {n: None for n in names}
    main(["data", "verify", prefix])
    assert "All 3 shards" in capsys.readouterr().out

    raw = bytearray(Path(paths[1]).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    Path(paths[1]).write_bytes(bytes(raw))
    with pytest.raises(
        ValueError, match=rf"(?s)1 of 3 .*{names[1]}: record \d is damaged \(corrupted"
    ):
        verify_tfrecords(prefix, progress=False)
    # What TensorFlow itself says names no file: the reason verify exists.
    with pytest.raises(tf.errors.DataLossError) as raised:
        list(
            read_tfrecords(
                prefix + "-*", batch_size=1, canvas=(640, 640), mask_targets="full"
            )
        )
    assert names[1] not in str(raised.value)

    Path(paths[0]).unlink()
    extra = tf.io.TFRecordWriter(paths[2] + ".tmp")
    for record in tf.data.TFRecordDataset(paths[2]):
        extra.write(record.numpy())
    extra.write(record.numpy())  # one record more than was written
    extra.close()
    os.replace(paths[2] + ".tmp", paths[2])
    with pytest.raises(ValueError, match="3 of 3") as raised:
        verify_tfrecords(prefix, progress=False)
    assert f"{names[0]}: missing" in str(raised.value)
    assert f"{names[2]}: sha256 differs" not in str(raised.value)  # counted instead
    assert "2 records, 1 were written" in str(raised.value)


def test_aspect_ratio_grouping_equals_coco_reader(tmp_path):
    from coco_mini import with_portrait

    path, _, _ = with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    prefix = str(tmp_path / "shards" / "p")
    write_tfrecords(data, prefix, num_shards=2, progress=False)
    kwargs = dict(
        batch_size=2,
        scales=[(512, 384)],
        max_instances=20,
        training=True,
        shuffle=False,
        seed=3,
        repeat=True,
        aspect_ratio_grouping=True,
    )
    # One portrait image in six: its first batch of two closes in epoch 2.
    got = _assert_same(
        read_tfrecords(f"{prefix}-*", **kwargs, mask_targets="full").take(6),
        data.as_tf_dataset(**kwargs, mask_targets="full").take(6),
    )
    assert [images.shape[1:3] for images, _ in got].count((512, 384)) == 1
    assert {images.shape[1:3] for images, _ in got} == {(384, 512), (512, 384)}
