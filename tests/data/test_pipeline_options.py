"""One pipeline, one set of options: the three readers give the same batches.

The same synthetic images (one of them a negative) as a COCO json, as
TFRecord shards and as a tf.data source of tfds-style dicts; every option
passed explicitly to every entry point, and the batches compared element by
element. A reader that drifted (a default, an option it ignores, its
geometry or its targets) fails here.
"""

import inspect
import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from keras_solov2.data import (
    CocoDataset,
    PipelineOptions,
    from_tfds,
    generate_shapes_dataset,
    read_tfrecords,
    write_tfrecords,
)
from keras_solov2.data import options as options_module


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """`(CocoDataset, TFRecord pattern, tfds-style tf.data source)`."""
    root = tmp_path_factory.mktemp("readers_agree")
    annotations = generate_shapes_dataset(
        str(root), 5, image_size=(72, 104), seed=3, max_shapes=3
    )
    with open(annotations) as f:
        data = json.load(f)
    negative = data["images"][2]["id"]  # the third image becomes a negative
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != negative]
    with open(annotations, "w") as f:
        json.dump(data, f)
    dataset = CocoDataset(annotations, str(root / "images"), progress=False)
    write_tfrecords(dataset, str(root / "shards"), num_shards=2, progress=False)

    examples = []
    for index in range(len(dataset)):
        record = dataset.image_record(index)
        h, w = record["height"], record["width"]
        instances = dataset.instances(index)
        rles = [mask_utils.frPyObjects(i["segmentation"], h, w) for i in instances]
        masks = np.zeros((len(instances), h, w), np.uint8)
        for k, rle in enumerate(rles):
            masks[k] = mask_utils.decode(mask_utils.merge(rle))
        boxes = np.array(
            [[x, y, x + bw, y + bh] for x, y, bw, bh in (i["bbox"] for i in instances)],
            np.float64,
        ).reshape(-1, 4)
        with open(record["path"], "rb") as f:
            raw = f.read()
        labels = np.array([i["label"] for i in instances], np.int64)
        examples.append((raw, masks, labels, boxes))
    source = tf.data.Dataset.from_generator(
        lambda: (
            {"image": raw, "objects": {"mask": m, "label": lab, "box": b}}
            for raw, m, lab, b in examples
        ),
        output_signature={
            "image": tf.TensorSpec([], tf.string),
            "objects": {
                "mask": tf.TensorSpec([None, None, None], tf.uint8),
                "label": tf.TensorSpec([None], tf.int64),
                "box": tf.TensorSpec([None, 4], tf.float64),
            },
        },
    )
    return dataset, str(root / "shards-*"), source


def _readers(sources, options):
    dataset, pattern, source = sources
    return {
        "coco": dataset.as_tf_dataset(**options),
        "tfrecord": read_tfrecords(pattern, **options),
        "tfds": from_tfds(
            source,
            feature_map={"boxes": "objects/box"},
            box_format="xyxy",
            **options,
        ),
    }


def _flat(element):
    """`{"images", "targets/<key>", "counts/<key>"}` of one batch."""
    images, targets, counts = element
    flat = {"images": images.numpy()}
    for group, values in (("targets", targets), ("counts", counts)):
        for key in sorted(values):
            flat[f"{group}/{key}"] = values[key].numpy()
    return flat


OPTIONS = [
    # Training draws (scales, flips), full masks, counts, cache, repeat.
    PipelineOptions(
        batch_size=2,
        canvas=(96, 128),
        scales=[(120, 80), (104, 64)],
        max_instances=2,
        training=True,
        flip_probability=0.5,
        mask_targets="full",
        shuffle=False,
        seed=7,
        repeat=True,
        cache=True,
        return_counts=True,
    ),
    # Fit to the canvas, compact targets, negatives left out, no remainder.
    PipelineOptions(
        batch_size=3,
        canvas=(64, 64),
        training=False,
        keep_negatives=False,
        drop_remainder=False,
        size_divisor=16,
        return_counts=True,
    ),
    # Large-scale jitter with a random window.
    PipelineOptions(
        batch_size=2,
        canvas=(64, 96),
        large_scale_jitter=(0.5, 1.5),
        max_instances=3,
        shuffle=False,
        seed=2,
        repeat=True,
        return_counts=True,
    ),
]


@pytest.mark.parametrize("options", OPTIONS, ids=["scales", "fit", "jitter"])
def test_the_three_readers_give_the_same_batches(sources, options):
    kwargs = options.as_kwargs()  # every option, passed explicitly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # truncation notes
        readers = _readers(sources, kwargs)
    specs = {name: ds.element_spec for name, ds in readers.items()}
    assert specs["coco"] == specs["tfrecord"] == specs["tfds"]
    batches = {name: list(ds.take(3)) for name, ds in readers.items()}
    assert len(batches["coco"]) >= 2
    for name in ("tfrecord", "tfds"):
        assert len(batches[name]) == len(batches["coco"]), name
        for got, want in zip(batches[name], batches["coco"], strict=True):
            got, want = _flat(got), _flat(want)
            assert list(got) == list(want)
            for key, value in want.items():
                np.testing.assert_array_equal(got[key], value, f"{name}: {key}")
    counts = [c for _, _, c in batches["coco"]]
    if options.max_instances == 2:  # the shapes images hold up to 3
        assert sum(int(c["truncated"].numpy().sum()) for c in counts) > 0


def test_one_signature_for_every_entry_point():
    signatures = [
        inspect.signature(CocoDataset.as_tf_dataset),
        inspect.signature(read_tfrecords),
        inspect.signature(from_tfds),
    ]
    for signature in signatures:
        params = signature.parameters
        for name in ("batch_size", "canvas", "scales"):
            default = PipelineOptions.__dataclass_fields__[name].default
            assert params[name].default == default, (signature, name)
        assert params["options"].kind is inspect.Parameter.VAR_KEYWORD
    with pytest.raises(TypeError, match="shuffle_bufer"):
        PipelineOptions.from_kwargs(shuffle_bufer=8)


def test_image_size_is_a_deprecated_alias_of_canvas(sources, monkeypatch):
    dataset, pattern, _ = sources
    monkeypatch.setattr(options_module, "_WARNED", set())
    with pytest.warns(DeprecationWarning, match="canvas=") as caught:
        old = dataset.as_tf_dataset(image_size=(64, 64), training=False)
        read_tfrecords(pattern, image_size=(64, 64), training=False)
    assert len([w for w in caught if w.category is DeprecationWarning]) == 1
    assert caught[0].filename == __file__
    new = dataset.as_tf_dataset(canvas=(64, 64), training=False)
    assert old.element_spec == new.element_spec
    for (a, _), (b, _) in zip(old, new, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="canvas"):
        dataset.as_tf_dataset(canvas=(64, 64), image_size=(64, 64))


def test_shuffle_defaults_are_the_same_rule_for_every_source():
    assert PipelineOptions().shuffles(10) == 10  # training: the source's buffer
    assert PipelineOptions().shuffles(None) is None  # tfds keeps its order
    assert PipelineOptions(training=False).shuffles(10) is None
    assert PipelineOptions(training=False, shuffle_buffer=4).shuffles(None) == 4
    assert PipelineOptions(shuffle=False, shuffle_buffer=4).shuffles(10) is None
    with pytest.raises(ValueError, match="shuffle_buffer"):
        PipelineOptions(shuffle=True).shuffles(None)
    assert os.path.basename(__file__).startswith("test_")
