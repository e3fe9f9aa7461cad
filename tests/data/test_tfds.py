"""`from_tfds`: tfds-style example dicts to SOLOv2 batches."""

import numpy as np
import pytest
import tensorflow as tf
from image_reference import (
    assert_mean_padding,
    bilinear,
    keep_ratio_size,
    valid_extent,
)
from tfds_examples import (
    CANVAS,
    EXAMPLES,
    dataset_of,
    fit_to_canvas,
    raw_dataset,
    rect_masks,
)

from keras_solov2.data import from_tfds


def _expected(example, m, label_offset, flip=False):
    """Numpy reference: kept masks, labels and tight boxes on the canvas."""
    image = example["image"]
    h, w = image.shape[:2]
    rh, rw = fit_to_canvas(h, w)
    rows = (2 * np.arange(rh) + 1) * h // (2 * rh)
    cols = (2 * np.arange(rw) + 1) * w // (2 * rw)
    full = example["objects"]["mask"][..., 0]
    keep = full.any(axis=(1, 2))
    full, labels = full[keep], example["objects"]["label"][keep] + label_offset
    masks = np.zeros((m, *CANVAS), np.uint8)
    resized = full[:, rows][:, :, cols]
    if flip:
        resized = resized[:, :, ::-1]
    masks[: len(full), :rh, :rw] = resized
    lab = np.full([m], -1, np.int32)
    lab[: len(full)] = labels
    boxes = np.zeros((m, 4), np.float32)
    for i, mask in enumerate(full):
        ys, xs = np.nonzero(mask)
        x1, x2 = xs.min() * rw / w, (xs.max() + 1) * rw / w
        if flip:
            x1, x2 = rw - x2, rw - x1
        boxes[i] = [x1, ys.min() * rh / h, x2, (ys.max() + 1) * rh / h]
    img = bilinear(image, rh, rw)
    return (img[:, ::-1] if flip else img), masks, lab, boxes, int((~keep).sum())


def _check_batches(ds, examples, m, label_offset, flip=False):
    got = list(ds)
    assert len(got) == 2  # batch_size=2, drop_remainder=False
    i = 0
    for images, targets, counts in got:
        for b in range(images.shape[0]):
            img, masks, labels, boxes, empty = _expected(
                examples[i], m, label_offset, flip
            )
            image = images[b].numpy()
            rh, rw = img.shape[:2]
            # Raw, resized to within one grey level of the reference, padded
            # with the mean.
            assert np.abs(image[:rh, :rw] - img).max() <= 1
            np.testing.assert_array_equal(image[:rh, :rw], np.round(image[:rh, :rw]))
            assert_mean_padding(image, rh, rw)
            np.testing.assert_array_equal(targets["masks"][b].numpy(), masks)
            np.testing.assert_array_equal(targets["labels"][b].numpy(), labels)
            np.testing.assert_allclose(targets["boxes"][b].numpy(), boxes, atol=1e-5)
            assert int(counts["empty_dropped"][b]) == empty
            i += 1
    assert i == len(examples)


def test_stack_masks_exact_and_empty_counted(capfd):
    raw, examples = raw_dataset()
    ds = from_tfds(
        raw,
        batch_size=2,
        canvas=CANVAS,
        max_instances=4,
        training=False,
        label_offset=-1,
        return_counts=True,
        drop_remainder=False,
        mask_targets="full",
    )
    images, targets, _ = ds.element_spec
    assert images.shape.as_list() == [None, 64, 64, 3]
    assert targets["masks"].shape.as_list() == [None, 4, 64, 64]
    assert targets["masks"].dtype == tf.uint8
    assert targets["labels"].shape.as_list() == [None, 4]
    assert targets["labels"].dtype == tf.int32
    assert targets["boxes"].shape.as_list() == [None, 4, 4]
    _check_batches(ds, examples, 4, -1)
    err = capfd.readouterr().err
    assert "dropped 1 instance(s) with an empty mask in example 0" in err


def test_static_batch_and_flip():
    raw, examples = raw_dataset()
    ds = from_tfds(
        raw,
        batch_size=2,
        canvas=CANVAS,
        max_instances=3,
        training=True,
        flip_probability=1.0,
        on_empty="ignore_but_count",
        return_counts=True,
        drop_remainder=False,
        mask_targets="full",
    )
    _check_batches(ds, examples, 3, 0, flip=True)
    static = from_tfds(
        raw, batch_size=2, canvas=CANVAS, max_instances=3, mask_targets="full"
    )
    images, targets = static.element_spec
    assert images.shape.as_list() == [2, 64, 64, 3]
    assert targets["masks"].shape.as_list() == [2, 3, 64, 64]
    assert len(list(static)) == 1


def test_random_scale_draws_follow_seed():
    raw, _ = raw_dataset()

    def run(seed):
        ds = from_tfds(
            raw,
            batch_size=1,
            canvas=CANVAS,
            scales=[(64, 32), (48, 24)],
            max_instances=3,
            seed=seed,
            on_empty="ignore_but_count",
            mask_targets="full",
        )
        out = []
        for images, t in ds:
            out.append((valid_extent(images[0].numpy()), t["masks"].numpy()))
        return out

    a, b = run(3), run(3)
    for (size_a, x), (size_b, y) in zip(a, b, strict=True):
        assert size_a == size_b
        np.testing.assert_array_equal(x, y)
    for (size, _), (h, w, _) in zip(a, EXAMPLES, strict=True):
        # One of the two keep-ratio scales was drawn.
        assert size in {keep_ratio_size(h, w, s) for s in [(64, 32), (48, 24)]}


def test_given_tfds_boxes_and_id_image_match_stack():
    raw, examples = raw_dataset()
    common = dict(
        batch_size=2,
        canvas=CANVAS,
        max_instances=4,
        training=False,
        return_counts=True,
        on_empty="ignore_but_count",
        drop_remainder=False,
    )
    boxed = from_tfds(
        raw, feature_map={"boxes": "objects/bbox"}, **common, mask_targets="full"
    )
    # The empty instance has no pixel in the id image either.
    ids = from_tfds(
        raw,
        feature_map={"masks": "panoptic"},
        mask_format="id_image",
        **common,
        mask_targets="full",
    )
    _check_batches(boxed, examples, 4, 0)
    _check_batches(ids, examples, 4, 0)


def test_truncation_counted_and_raise_on_empty():
    raw, _ = raw_dataset()
    ds = from_tfds(
        raw,
        batch_size=3,
        canvas=CANVAS,
        max_instances=1,
        training=False,
        return_counts=True,
        on_empty="ignore_but_count",
        mask_targets="full",
    )
    ((_, targets, counts),) = list(ds)
    np.testing.assert_array_equal(counts["truncated"], [1, 0, 0])
    np.testing.assert_array_equal(counts["empty_dropped"], [1, 0, 0])
    np.testing.assert_array_equal(targets["labels"][:, 0], [1, 2, -1])
    strict = from_tfds(
        raw,
        batch_size=1,
        canvas=CANVAS,
        training=False,
        on_empty="raise",
        mask_targets="full",
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty masks"):
        list(strict)


def test_bad_feature_map():
    raw, _ = raw_dataset()
    with pytest.raises(KeyError, match="no key 'masks'"):
        from_tfds(
            raw,
            feature_map={"masks": "objects/masks"},
            canvas=CANVAS,
            mask_targets="full",
        )
    with pytest.raises(ValueError, match="Unknown feature_map"):
        from_tfds(raw, feature_map={"mask": "x"}, canvas=CANVAS, mask_targets="full")


@pytest.mark.parametrize("flip", [False, True])
def test_xyxy_boxes_scaled_clipped_flipped(flip):
    # Given boxes need not match the masks; some stick out of the image.
    specs = [
        (40, 60, [[3.0, 2.0, 20.0, 10.0], [-5.0, 12.5, 70.0, 45.0]]),
        (50, 30, [[5.5, 5.0, 25.0, 44.0]]),
    ]
    examples = []
    for k, (h, w, xyxy) in enumerate(specs):
        xyxy = np.array(xyxy, np.float64)
        tfds_boxes = xyxy[:, [1, 0, 3, 2]] / np.array([h, w, h, w], np.float64)
        examples.append(
            {
                "image": np.random.default_rng(k).integers(0, 256, (h, w, 3), np.uint8),
                "objects": {
                    "mask": rect_masks(h, w, [(1, 1, 4, 4)] * len(xyxy)),
                    "label": np.arange(len(xyxy), dtype=np.int64),
                    "xyxy": xyxy,
                    "bbox": tfds_boxes,
                },
            }
        )
    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "objects": {
            "mask": tf.TensorSpec([None, None, None, 1], tf.uint8),
            "label": tf.TensorSpec([None], tf.int64),
            "xyxy": tf.TensorSpec([None, 4], tf.float64),
            "bbox": tf.TensorSpec([None, 4], tf.float64),
        },
    }
    common = dict(
        batch_size=2,
        canvas=CANVAS,
        max_instances=3,
        training=flip,
        flip_probability=1.0,
    )
    ((_, xyxy_targets),) = list(
        from_tfds(
            dataset_of(examples, signature),
            feature_map={"boxes": "objects/xyxy"},
            box_format="xyxy",
            **common,
            mask_targets="full",
        )
    )
    ((_, tfds_targets),) = list(
        from_tfds(
            dataset_of(examples, signature),
            feature_map={"boxes": "objects/bbox"},
            box_format="tfds",
            **common,
            mask_targets="full",
        )
    )
    for b, (h, w, xyxy) in enumerate(specs):
        rh, rw = fit_to_canvas(h, w)
        want = np.zeros((3, 4), np.float64)
        for i, (x1, y1, x2, y2) in enumerate(xyxy):
            x1, x2 = np.clip([x1 * rw / w, x2 * rw / w], 0, rw)
            y1, y2 = np.clip([y1 * rh / h, y2 * rh / h], 0, rh)
            if flip:
                x1, x2 = rw - x2, rw - x1
            want[i] = [x1, y1, x2, y2]
        np.testing.assert_allclose(xyxy_targets["boxes"][b], want, atol=1e-5)
        np.testing.assert_allclose(tfds_targets["boxes"][b], want, atol=1e-5)
    np.testing.assert_allclose(xyxy_targets["boxes"], tfds_targets["boxes"], atol=1e-5)
    # Sanity: the clipped box of example 0 spans the whole resized width.
    assert fit_to_canvas(40, 60) == (43, 64)
    np.testing.assert_allclose(
        xyxy_targets["boxes"].numpy()[0, 1, [0, 2]], [0, 64], atol=1e-5
    )


def test_rgb_id_image_matches_stack():
    h, w = 36, 44
    ids = np.zeros((h, w), np.int64)
    ids[2:10, 3:15] = 5
    ids[12:30, 1:8] = 300  # R=44, G=1
    ids[20:34, 20:40] = 70000  # R=112, G=17, B=1
    # Distractors that only differ from listed ids in the G or B channel.
    ids[0:2, 30:44] = 44
    ids[30:36, 0:10] = 5 + 65536
    ids[4:8, 30:40] = 112 + 17 * 256
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1)
    assert rgb.max() < 256
    instance_ids = np.array([70000, 5, 300], np.int64)
    example = {
        "image": np.random.default_rng(7).integers(0, 256, (h, w, 3), np.uint8),
        "objects": {
            "mask": (ids[None, :, :, None] == instance_ids[:, None, None, None]).astype(
                np.uint8
            ),
            "label": np.array([2, 0, 1], np.int64),
            "id": instance_ids,
        },
        "panoptic": rgb.astype(np.uint8),
    }
    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "objects": {
            "mask": tf.TensorSpec([None, None, None, 1], tf.uint8),
            "label": tf.TensorSpec([None], tf.int64),
            "id": tf.TensorSpec([None], tf.int64),
        },
        "panoptic": tf.TensorSpec([None, None, 3], tf.uint8),
    }
    common = dict(batch_size=1, canvas=CANVAS, max_instances=4, training=False)
    ((_, stack),) = list(
        from_tfds(dataset_of([example], signature), **common, mask_targets="full")
    )
    ((_, rgb_targets),) = list(
        from_tfds(
            dataset_of([example], signature),
            feature_map={"masks": "panoptic", "instance_ids": "objects/id"},
            mask_format="id_image",
            **common,
            mask_targets="full",
        )
    )
    _, masks, labels, boxes, empty = _expected(example, 4, 0)
    assert empty == 0
    np.testing.assert_array_equal(stack["masks"][0], masks)
    np.testing.assert_array_equal(stack["labels"][0], labels)
    for key in ("masks", "labels", "boxes"):
        np.testing.assert_array_equal(rgb_targets[key], stack[key])
    np.testing.assert_array_equal(rgb_targets["labels"][0], [2, 0, 1, -1])
