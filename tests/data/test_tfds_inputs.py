"""`from_tfds`: shuffling, float and wide-integer images, the default canvas,
and a real `tensorflow_datasets` builder's mock data."""

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

N_SHUFFLE = 8


def _numbered_dataset():
    """Examples `k = 0..7`: label `k`, image value `k`, a mask at the left."""
    examples = []
    for k in range(N_SHUFFLE):
        examples.append(
            {
                "image": np.full((32, 32, 3), k, np.uint8),
                "objects": {
                    "mask": rect_masks(32, 32, [(k, 0, k + 4, 8)]),
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
    return dataset_of(examples, signature)


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
    raw, _ = raw_dataset()
    with pytest.raises(ValueError, match="shuffle_buffer"):
        from_tfds(raw, canvas=CANVAS, shuffle_buffer=bad, mask_targets="full")


def _float_dataset(scale):
    """`_raw_dataset` with float32 images: the uint8 values times `scale`/255."""
    raw, examples = raw_dataset()
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
        from_tfds(raw_dataset()[0], **common, mask_targets="full")
    )
    floats, examples = _float_dataset(scale)
    ((got, got_targets),) = list(
        from_tfds(floats, image_scale=scale, **common, mask_targets="full")
    )
    # Exactly the uint8 images' batches: not black, not truncated.
    np.testing.assert_array_equal(got, want)
    for key in ("masks", "labels", "boxes"):
        np.testing.assert_array_equal(got_targets[key], want_targets[key])
    rh, rw = fit_to_canvas(*EXAMPLES[0][:2])
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
    raw, _ = raw_dataset()
    with pytest.raises(ValueError, match="only for float images"):
        from_tfds(raw, canvas=CANVAS, image_scale=255.0, mask_targets="full")
    with pytest.raises(ValueError, match="image_scale"):
        from_tfds(floats, canvas=CANVAS, image_scale=0.0, mask_targets="full")


def test_wide_integer_images_are_checked():
    raw, _ = raw_dataset()
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
    raw, _ = raw_dataset()
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
