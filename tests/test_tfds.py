"""`from_tfds`: tfds-style example dicts to SOLOv2 batches."""

import numpy as np
import pytest
import tensorflow as tf
from image_reference import (
    assert_mean_padding,
    bilinear,
    fit_size,
    keep_ratio_size,
    valid_extent,
)

from keras_solov2.data import from_tfds

CANVAS = (64, 64)
# (h, w, [(label, y1, x1, y2, x2) inclusive-exclusive rectangles])
EXAMPLES = [
    (40, 60, [(1, 2, 3, 10, 20), (3, 20, 30, 39, 59), (2, 0, 0, 0, 0)]),
    (50, 30, [(2, 5, 5, 45, 25)]),
    (33, 47, []),
]


def _example(k, h, w, rects):
    rng = np.random.default_rng(k)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((len(rects), h, w, 1), np.uint8)
    for i, (_, y1, x1, y2, x2) in enumerate(rects):
        masks[i, y1:y2, x1:x2] = 1  # the third of example 0 stays empty
    labels = np.array([r[0] for r in rects], np.int64)
    boxes = np.array(
        [[y1 / h, x1 / w, y2 / h, x2 / w] for _, y1, x1, y2, x2 in rects], np.float32
    ).reshape(-1, 4)
    ids = np.zeros((h, w), np.int32)
    for i in range(len(rects)):
        ids[masks[i, :, :, 0] > 0] = i + 1
    return {
        "image": image,
        "objects": {"mask": masks, "label": labels, "bbox": boxes},
        "panoptic": ids,
    }


def _raw_dataset():
    examples = [_example(k, *e) for k, e in enumerate(EXAMPLES)]
    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "objects": {
            "mask": tf.TensorSpec([None, None, None, 1], tf.uint8),
            "label": tf.TensorSpec([None], tf.int64),
            "bbox": tf.TensorSpec([None, 4], tf.float32),
        },
        "panoptic": tf.TensorSpec([None, None], tf.int32),
    }
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=signature
    ), examples


def _size(h, w):
    return fit_size(h, w, CANVAS)


def _expected(example, m, label_offset, flip=False):
    """Numpy reference: kept masks, labels and tight boxes on the canvas."""
    image = example["image"]
    h, w = image.shape[:2]
    rh, rw = _size(h, w)
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
    raw, examples = _raw_dataset()
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
    raw, examples = _raw_dataset()
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
    raw, _ = _raw_dataset()

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
    raw, examples = _raw_dataset()
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
    raw, _ = _raw_dataset()
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
    raw, _ = _raw_dataset()
    with pytest.raises(KeyError, match="no key 'masks'"):
        from_tfds(
            raw,
            feature_map={"masks": "objects/masks"},
            canvas=CANVAS,
            mask_targets="full",
        )
    with pytest.raises(ValueError, match="Unknown feature_map"):
        from_tfds(raw, feature_map={"mask": "x"}, canvas=CANVAS, mask_targets="full")


def test_tfds_mock_data_smoke(tmp_path):
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="tensorflow_datasets is not installed"
    )
    from etils import epath

    class ToyInstances(tfds.core.GeneratorBasedBuilder):
        """A builder whose features we define; mock_data never runs its code."""

        VERSION = tfds.core.Version("1.0.0")
        pkg_dir_path = epath.Path(tmp_path)

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(32, 48, 3)),
                        "objects": tfds.features.Sequence(
                            {
                                "mask": tfds.features.Tensor(
                                    shape=(32, 48, 1), dtype=np.uint8
                                ),
                                "label": tfds.features.ClassLabel(num_classes=3),
                            }
                        ),
                    }
                )
            )

        def _split_generators(self, dl_manager):
            raise NotImplementedError

        def _generate_examples(self):
            raise NotImplementedError

    def align(example):
        # mock_data draws each sequence's length independently.
        objects = example["objects"]
        n = tf.minimum(tf.shape(objects["mask"])[0], tf.shape(objects["label"])[0])
        example["objects"] = {k: v[:n] for k, v in objects.items()}
        return example

    with tfds.testing.mock_data(
        num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        raw = tfds.load(ToyInstances.name, split="train").map(align)
        ds = from_tfds(
            raw,
            batch_size=2,
            canvas=(64, 64),
            max_instances=5,
            return_counts=True,
            on_empty="ignore_but_count",
            mask_targets="full",
        )
        batches = list(ds)
    assert len(batches) == 2
    for images, targets, counts in batches:
        assert images.shape == (2, 64, 64, 3)
        assert targets["masks"].shape == (2, 5, 64, 64)
        labels = targets["labels"].numpy()
        assert labels.min() >= -1 and labels.max() <= 2
        assert set(np.unique(targets["masks"])) <= {0, 1}
        assert counts["truncated"].shape == (2,)


def _dataset(examples, signature):
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=signature
    )


def _rect_masks(h, w, rects):
    masks = np.zeros((len(rects), h, w, 1), np.uint8)
    for i, (y1, x1, y2, x2) in enumerate(rects):
        masks[i, y1:y2, x1:x2] = 1
    return masks


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
                    "mask": _rect_masks(h, w, [(1, 1, 4, 4)] * len(xyxy)),
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
            _dataset(examples, signature),
            feature_map={"boxes": "objects/xyxy"},
            box_format="xyxy",
            **common,
            mask_targets="full",
        )
    )
    ((_, tfds_targets),) = list(
        from_tfds(
            _dataset(examples, signature),
            feature_map={"boxes": "objects/bbox"},
            box_format="tfds",
            **common,
            mask_targets="full",
        )
    )
    for b, (h, w, xyxy) in enumerate(specs):
        rh, rw = _size(h, w)
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
    assert _size(40, 60) == (43, 64)
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
        from_tfds(_dataset([example], signature), **common, mask_targets="full")
    )
    ((_, rgb_targets),) = list(
        from_tfds(
            _dataset([example], signature),
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


N_SHUFFLE = 8


def _numbered_dataset():
    """Examples `k = 0..7`: label `k`, image value `k`, a mask at the left."""
    examples = []
    for k in range(N_SHUFFLE):
        examples.append(
            {
                "image": np.full((32, 32, 3), k, np.uint8),
                "objects": {
                    "mask": _rect_masks(32, 32, [(k, 0, k + 4, 8)]),
                    "label": np.array([k], np.int64),
                },
            }
        )
    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "objects": {
            "mask": tf.TensorSpec([None, None, None, 1], tf.uint8),
            "label": tf.TensorSpec([None], tf.int64),
        },
    }
    return _dataset(examples, signature)


def _epochs(ds, epochs=2):
    """Per epoch: the example numbers in order and the flags of flipped ones."""
    out = []
    for _ in range(epochs):
        order, flips = [], []
        for _, targets in ds:
            order.extend(targets["labels"][:, 0].numpy().tolist())
            # The mask sits at columns 0..15 of the 64-px canvas unless flipped.
            flips.extend((targets["boxes"][:, 0, 0].numpy() > 0).tolist())
        out.append((order, flips))
    return out


def test_shuffle_buffer_deterministic_per_seed():
    def make(seed, shuffle_buffer=N_SHUFFLE):
        return from_tfds(
            _numbered_dataset(),
            batch_size=2,
            canvas=CANVAS,
            max_instances=2,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            mask_targets="full",
        )

    a, b = make(5), make(5)
    for _ in range(2):  # two epochs, compared batch by batch
        for (img_a, t_a), (img_b, t_b) in zip(a, b, strict=True):
            np.testing.assert_array_equal(img_a, img_b)
            for key in ("masks", "labels", "boxes"):
                np.testing.assert_array_equal(t_a[key], t_b[key])
    (order1, flips1), (order2, flips2) = _epochs(make(5))
    for order in (order1, order2):
        # A full permutation: every example exactly once per epoch.
        assert sorted(order) == list(range(N_SHUFFLE))
    assert order1 != list(range(N_SHUFFLE))
    assert order1 != order2  # reshuffled every epoch
    (other, _), _ = _epochs(make(6))
    assert sorted(other) == list(range(N_SHUFFLE)) and other != order1
    # Buffer larger than the dataset: still each example once per epoch.
    for order, _ in _epochs(make(5, shuffle_buffer=100)):
        assert sorted(order) == list(range(N_SHUFFLE))
    # The flip draw follows the position after shuffling, so the flip pattern
    # is that of the unshuffled run with the same seed.
    plain = _epochs(make(5, shuffle_buffer=None))
    assert [o for o, _ in plain] == [list(range(N_SHUFFLE))] * 2
    assert [flips1, flips2] == [f for _, f in plain]
    assert 0 < sum(flips1) < N_SHUFFLE


def test_shuffle_buffer_with_repeat_reshuffles():
    ds = from_tfds(
        _numbered_dataset(),
        batch_size=4,
        canvas=CANVAS,
        max_instances=1,
        training=False,
        seed=2,
        shuffle_buffer=N_SHUFFLE,
        repeat=True,
        mask_targets="full",
    )
    order = [k for _, t in ds.take(6) for k in t["labels"][:, 0].numpy().tolist()]
    epochs = [order[i : i + N_SHUFFLE] for i in range(0, len(order), N_SHUFFLE)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(N_SHUFFLE))
    assert len({tuple(e) for e in epochs}) == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_bad_shuffle_buffer(bad):
    raw, _ = _raw_dataset()
    with pytest.raises(ValueError, match="shuffle_buffer"):
        from_tfds(raw, canvas=CANVAS, shuffle_buffer=bad, mask_targets="full")


def _float_dataset(scale):
    """`_raw_dataset` with float32 images: the uint8 values times `scale`/255."""
    raw, examples = _raw_dataset()
    return raw.map(
        lambda e: dict(e, image=tf.cast(e["image"], tf.float32) * (scale / 255.0))
    ), examples


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_images_with_their_scale(scale):
    common = dict(
        batch_size=3,
        canvas=CANVAS,
        max_instances=4,
        training=False,
        on_empty="ignore_but_count",
    )
    ((want, want_targets),) = list(
        from_tfds(_raw_dataset()[0], **common, mask_targets="full")
    )
    floats, examples = _float_dataset(scale)
    ((got, got_targets),) = list(
        from_tfds(floats, image_scale=scale, **common, mask_targets="full")
    )
    # Exactly the uint8 images' batches: not black, not truncated.
    np.testing.assert_array_equal(got, want)
    for key in ("masks", "labels", "boxes"):
        np.testing.assert_array_equal(got_targets[key], want_targets[key])
    rh, rw = _size(*EXAMPLES[0][:2])
    reference = bilinear(examples[0]["image"], rh, rw)
    assert np.abs(got[0].numpy()[:rh, :rw] - reference).max() <= 1
    assert got[0].numpy()[:rh, :rw].mean() > 100  # noise, mean about 127


def test_float_images_need_the_right_scale():
    floats, _ = _float_dataset(1.0)
    with pytest.raises(ValueError, match=r"feature_map\['image'\] = 'image'.*float32"):
        from_tfds(floats, canvas=CANVAS, mask_targets="full")
    with pytest.raises(ValueError, match="image_scale=255.0.*image_scale=1.0"):
        from_tfds(floats, canvas=CANVAS, mask_targets="full")
    # 0..255 floats declared as [0, 1]: an error when read, not white images.
    floats, _ = _float_dataset(255.0)
    wrong = from_tfds(
        floats,
        batch_size=1,
        canvas=CANVAS,
        image_scale=1.0,
        on_empty="ignore_but_count",
        mask_targets="full",
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="is image_scale right"):
        list(wrong)
    raw, _ = _raw_dataset()
    with pytest.raises(ValueError, match="only for float images"):
        from_tfds(raw, canvas=CANVAS, image_scale=255.0, mask_targets="full")
    with pytest.raises(ValueError, match="image_scale"):
        from_tfds(floats, canvas=CANVAS, image_scale=0.0, mask_targets="full")


def test_wide_integer_images_are_checked():
    raw, _ = _raw_dataset()
    wide = raw.map(lambda e: dict(e, image=tf.cast(e["image"], tf.int32) * 2))
    ds = from_tfds(
        wide,
        batch_size=1,
        canvas=CANVAS,
        on_empty="ignore_but_count",
        mask_targets="full",
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="values must be in 0..255"
    ):
        list(ds)


def test_default_canvas_and_size_divisor():
    raw, _ = _raw_dataset()
    with pytest.raises(ValueError, match="`canvas`.*required without"):
        from_tfds(raw, mask_targets="full")
    # The longest scale side 90: 96 with the default 32, 128 with 64.
    common = dict(batch_size=1, scales=[(90, 60)], on_empty="ignore_but_count")
    ds = from_tfds(raw, **common, mask_targets="full")
    assert ds.element_spec[0].shape == (1, 96, 96, 3)
    ds = from_tfds(raw, training=False, size_divisor=64, **common, mask_targets="full")
    assert ds.element_spec[0].shape == (1, 128, 128, 3)
    for images, _ in ds:
        image = images[0].numpy()
        rh, rw = valid_extent(image)
        assert_mean_padding(image, rh, rw)
    assert (rh, rw) == keep_ratio_size(*EXAMPLES[-1][:2], (90, 60))
    with pytest.raises(ValueError, match=r"multiples of `size_divisor` \(64\)"):
        from_tfds(raw, canvas=(96, 96), size_divisor=64, mask_targets="full")
