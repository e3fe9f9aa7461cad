"""Captions in drawn predictions: inside their masks, never on each other."""

import numpy as np
from coco_results_fixtures import (
    IMAGE_SIZES,
    GroundTruthModel,
    prediction_for,
    rectangle,
)
from PIL import Image

from keras_solov2.evaluation import save_prediction_grid
from keras_solov2.evaluation.visualization import (
    caption_layout,
    draw_instances,
    instance_color,
)


def _rect(shape, top, left, bottom, right):
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def _overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0, min(a[3], b[3]) - max(a[1], b[1])
    )


def _neighbours(shape=(128, 128)):
    # Four touching shapes whose top-left corners lie within 4 pixels of one
    # another: captions at those corners (the old placement) covered each
    # other.
    return [
        _rect(shape, 10, 10, 60, 60),
        _rect(shape, 12, 12, 70, 110),
        _rect(shape, 14, 8, 120, 40),
        _rect(shape, 10, 14, 40, 120),
    ]


def test_neighbouring_captions_do_not_overlap_and_sit_inside_their_masks():
    masks = _neighbours()
    detections = [(m, f"triangle 0.{90 - i}", (255, 0, 0)) for i, m in enumerate(masks)]
    layout = caption_layout(detections, (128, 128))
    boxes = [box for _, _, box, _, _ in layout]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert _overlap(a, b) == 0, (a, b)
    for mask, _, (x0, y0, x1, y1), _, _ in layout:
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
        # The caption's centre is on its own mask.
        assert mask[(y0 + y1) // 2, (x0 + x1) // 2]


def test_the_old_corner_placement_would_have_overlapped():
    """Guards the test above: its masks are a case that needs placing."""
    masks = _neighbours()
    corners = [(np.nonzero(m)[1].min(), np.nonzero(m)[0].min()) for m in masks]
    layout = caption_layout(
        [(m, "triangle 0.90", (0, 0, 0)) for m in masks], (128, 128)
    )
    w, h = (layout[0][2][2] - layout[0][2][0]), (layout[0][2][3] - layout[0][2][1])
    at_corners = [(x, y, x + w, y + h) for x, y in corners]
    assert any(
        _overlap(a, b) > 0
        for i, a in enumerate(at_corners)
        for b in at_corners[i + 1 :]
    )


def test_draw_instances_paints_each_caption_where_the_layout_puts_it():
    masks = np.stack(_neighbours())
    labels = np.array([0, 1, 2, 3])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    image = np.zeros((128, 128, 3), np.uint8)
    drawn = draw_instances(image, masks, labels, scores, class_names=list("abcd"))

    layout = caption_layout(
        [
            (m, f"{n} {s:.2f}", None)
            for m, n, s in zip(masks, "abcd", scores, strict=True)
        ],
        (128, 128),
    )
    for index, (_, _, (x0, y0, x1, _), _, _) in enumerate(layout):
        color = instance_color(index).astype(np.uint8)  # as drawn: truncated
        # The caption's background (its top row is free of text).
        np.testing.assert_array_equal(drawn[y0, x0:x1], np.tile(color, (x1 - x0, 1)))


def test_a_caption_wider_than_a_small_image_stays_inside_it():
    mask = _rect((20, 30), 5, 5, 15, 25)
    ((_, _, (x0, y0, x1, y1), _, _),) = caption_layout(
        [(mask, "a very long class name 0.99", (0, 0, 0))], (20, 30)
    )
    assert 0 <= x0 < x1 <= 30 and 0 <= y0 < y1 <= 20
    draw_instances(np.zeros((20, 30, 3)), mask[None], [0], [0.9], ["a very long name"])


def test_draw_instances():
    image = np.full((40, 50, 3), 100, np.uint8)
    masks = np.stack(
        [
            rectangle((40, 50), 10, 10, 30, 30),
            rectangle((40, 50), 0, 35, 10, 50),  # padding: not drawn
            rectangle((40, 50), 30, 35, 40, 50),  # low score: not drawn
        ]
    )
    drawn = draw_instances(
        image, masks, [1, -1, 0], [0.9, 0.99, 0.1], class_names=["a", "b"]
    )
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert not np.array_equal(drawn[25, 25], image[25, 25])  # inside the mask
    assert np.array_equal(drawn[20, 45], image[20, 45])  # outside every mask
    assert np.array_equal(drawn[5, 45], image[5, 45])  # padding instance
    assert np.array_equal(drawn[35, 45], image[35, 45])  # below the threshold
    assert np.array_equal(image, np.full((40, 50, 3), 100, np.uint8))  # no in-place


def test_save_prediction_grid(tmp_path):
    images = [np.full(IMAGE_SIZES[i] + (3,), 90, np.uint8) for i in (1, 2)]
    predictions = [
        {key: value[0] for key, value in prediction_for(i).items()} for i in (1, 2)
    ]
    path = tmp_path / "grid.png"
    grid = save_prediction_grid(images, predictions, str(path), columns=2, padding=2)
    with Image.open(path) as saved:
        assert saved.size == (grid.shape[1], grid.shape[0])
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), grid)
    assert grid.shape == (64 + 2 * 2, 2 * 80 + 3 * 2, 3)  # cells of the largest size
    # Batched form, as returned by predict for same-sized images.
    batched = GroundTruthModel().predict(
        np.stack([np.full((48, 48, 3), i, np.uint8) for i in (2, 2)])
    )
    grid = save_prediction_grid(
        [np.zeros((48, 48, 3), np.uint8)] * 2, batched, str(path)
    )
    assert grid.dtype == np.uint8
