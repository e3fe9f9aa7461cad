"""The COCO reader's canvas: its default, its divisor, aspect-ratio grouping."""

import numpy as np
import pytest
from coco_mini import ANN_FILE, IMAGE_DIR, with_portrait
from coco_reference import check_batch
from image_reference import keep_ratio_size, valid_extent

from keras_solov2.data import CocoDataset
from keras_solov2.utils import image_geometry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


@pytest.fixture(scope="module")
def dataset():
    return CocoDataset(str(ANN_FILE), str(IMAGE_DIR))


def test_default_canvas_fits_portrait_and_landscape(tmp_path):
    path, coco, pil_images = with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    shapes = {(im["height"] > im["width"]) for im in coco.imgs.values()}
    assert shapes == {False, True}  # portrait and landscape
    scales = [(768, 512), (768, 448)]
    # The README's first example used to fail here: a 512x768 canvas does
    # not hold the portrait image. The message says which canvas would.
    with pytest.raises(
        ValueError,
        match=r"'portrait\.png' \(500x333\) resized with scale \(768, 512\) becomes "
        r"768x511, which does not fit the 512x768 canvas.*768x768.*omitting",
    ):
        data.as_tf_dataset(
            batch_size=2, canvas=(512, 768), scales=scales, mask_targets="full"
        )
    # The README's call, as it now reads.
    readme = data.as_tf_dataset(
        batch_size=8, scales=scales, max_instances=50, repeat=True, mask_targets="full"
    )
    images, targets = next(iter(readme))
    assert images.shape == (8, 768, 768, 3)
    assert targets["masks"].shape == (8, 50, 768, 768)
    ds = data.as_tf_dataset(
        batch_size=2, scales=scales, max_instances=50, seed=1, mask_targets="full"
    )
    assert ds.element_spec[0].shape == (2, 768, 768, 3)
    assert ds.element_spec[1]["masks"].shape == (2, 50, 768, 768)
    seen = []
    for _ in range(2):
        for images, targets in ds:
            targets = {k: v.numpy() for k, v in targets.items()}
            seen += check_batch(
                images.numpy(), targets, coco, pil_images, scales, (768, 768), 50
            )
    assert {s[0] for s in seen} == set(coco.imgs)
    assert 7 in {s[0] for s in seen}
    # Same seed and arguments, the canvas given explicitly: the same batches.
    kwargs = dict(batch_size=2, scales=scales, max_instances=50, seed=1)
    implicit = data.as_tf_dataset(**kwargs, mask_targets="full")
    explicit = data.as_tf_dataset(canvas=(768, 768), **kwargs, mask_targets="full")
    for (a, ta), (b, tb) in zip(implicit, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta["masks"], tb["masks"])


def test_size_divisor_sets_the_canvas_multiple(dataset):
    # 650 is 21 x 32 + 8 and 10 x 64 + 10: the default square differs.
    ds = dataset.as_tf_dataset(
        batch_size=1, scales=[(650, 400)], training=False, mask_targets="full"
    )
    assert ds.element_spec[0].shape == (1, 672, 672, 3)
    ds = dataset.as_tf_dataset(
        batch_size=1,
        scales=[(650, 400)],
        training=False,
        size_divisor=64,
        mask_targets="full",
    )
    assert ds.element_spec[0].shape == (1, 704, 704, 3)
    images, _ = next(iter(ds))
    assert valid_extent(images[0].numpy()) == keep_ratio_size(612, 612, (650, 400))
    # 480 is a multiple of 32 but not of 64.
    dataset.as_tf_dataset(batch_size=1, canvas=(480, 480), mask_targets="full")
    with pytest.raises(ValueError, match=r"multiples of `size_divisor` \(64\)"):
        dataset.as_tf_dataset(
            batch_size=1, canvas=(480, 480), size_divisor=64, mask_targets="full"
        )
    for bad in (0, -32, 2.5, True):
        with pytest.raises(ValueError, match="size_divisor"):
            dataset.as_tf_dataset(
                batch_size=1,
                canvas=(480, 480),
                size_divisor=bad,
                mask_targets="full",
            )


def test_aspect_ratio_grouping_puts_each_orientation_on_its_canvas(tmp_path):
    path, coco, pil_images = with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    scales = [(768, 512), (768, 448)]
    kwargs = dict(batch_size=2, scales=scales, max_instances=50, seed=1)
    ds = data.as_tf_dataset(**kwargs, mask_targets="full", aspect_ratio_grouping=True)
    # Default canvases: (max short, max long) and its transpose, against
    # the 768x768 square that fits both orientations.
    assert ds.element_spec[0].shape.as_list() == [2, None, None, 3]
    portrait_ids = {i for i, im in coco.imgs.items() if im["height"] > im["width"]}
    assert portrait_ids == {7}
    seen, pixels = [], 0
    for _ in range(3):
        for images, targets in ds:
            canvas = tuple(images.shape[1:3])
            assert canvas in {(512, 768), (768, 512)}
            targets = {k: v.numpy() for k, v in targets.items()}
            assert targets["masks"].shape[2:] == canvas
            batch = check_batch(
                images.numpy(), targets, coco, pil_images, scales, canvas, 50
            )
            # Every image of a batch has the orientation of its canvas.
            for image_id, _, _ in batch:
                assert (image_id in portrait_ids) == (canvas == (768, 512))
            seen += batch
            pixels += images.shape[0] * canvas[0] * canvas[1]
    # 6 images: 5 landscape or square, 1 portrait; batches of 2 drop one
    # incomplete landscape batch and the lone portrait image per epoch.
    assert len(seen) == 3 * 4
    assert pixels == len(seen) * 512 * 768 < len(seen) * 768 * 768
    # An explicit canvas is sorted into the landscape one; too small a
    # canvas names the image and the canvases that would fit.
    explicit = data.as_tf_dataset(
        canvas=(768, 512), **kwargs, aspect_ratio_grouping=True
    )
    implicit = data.as_tf_dataset(**kwargs, aspect_ratio_grouping=True)
    for (a, ta), (b, tb) in zip(implicit, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta["mask_targets"], tb["mask_targets"])
    with pytest.raises(
        ValueError,
        match=r"'000000434204\.jpg' \(333x500\) resized with scale \(768, 512\) "
        r"becomes 511x768, which does not fit the 512x736 canvas.*512x768 \(and "
        r"768x512 for portrait images\)",
    ):
        data.as_tf_dataset(canvas=(736, 512), **kwargs, aspect_ratio_grouping=True)
    with pytest.raises(ValueError, match="`aspect_ratio_grouping` must be True or"):
        data.as_tf_dataset(**kwargs, aspect_ratio_grouping="yes")


def test_aspect_ratio_grouping_is_the_square_canvas_without_its_padding(tmp_path):
    path, _, _ = with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    kwargs = dict(
        batch_size=1,
        scales=[(768, 512), (768, 448)],
        max_instances=50,
        seed=4,
        shuffle=False,
    )
    square = data.as_tf_dataset(**kwargs)
    grouped = data.as_tf_dataset(**kwargs, aspect_ratio_grouping=True)
    assert square.element_spec[0].shape == (1, 768, 768, 3)
    mean = np.float32(image_geometry.PIXEL_MEAN)
    count = 0
    for (a, ta), (b, tb) in zip(square, grouped, strict=True):
        a, b = a.numpy(), b.numpy()
        h, w = b.shape[1:3]
        np.testing.assert_array_equal(a[:, :h, :w], b)
        assert (a[:, h:] == mean).all() and (a[:, :, w:] == mean).all()
        for key in ("labels", "boxes", "mask_centers", "mask_areas"):
            np.testing.assert_array_equal(ta[key], tb[key])
        small = ta["mask_targets"].numpy()
        np.testing.assert_array_equal(
            small[:, :, : h // 4, : w // 4], tb["mask_targets"]
        )
        assert not small[:, :, h // 4 :].any() and not small[:, :, :, w // 4 :].any()
        count += 1
    assert count == 6
