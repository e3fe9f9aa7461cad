"""Target assignment against hand-computed cases (SOLOV2 reference §3)."""

import numpy as np
import pytest

from keras_solov2.layers import SOLOv2TargetEncoder

SIZE = 64  # canvas; mask features are 16 x 16


def encode(instances, center_sigma=0.2, max_positives=50, max_instances=4):
    """instances: list of (label, (y1, y2, x1, x2)) filled rectangles."""
    masks = np.zeros((1, max_instances, SIZE, SIZE), np.uint8)
    labels = np.full((1, max_instances), -1, np.int32)
    boxes = np.zeros((1, max_instances, 4), np.float32)
    for m, (label, (y1, y2, x1, x2)) in enumerate(instances):
        masks[0, m, y1:y2, x1:x2] = 1
        labels[0, m] = label
        boxes[0, m] = (x1, y1, x2, y2)
    encoder = SOLOv2TargetEncoder(
        num_grids=(8, 4),
        scale_ranges=((1, 48), (32, 128)),
        center_sigma=center_sigma,
        max_positives=max_positives,
    )
    out = encoder(masks, labels, boxes, mask_size=(SIZE // 4, SIZE // 4))
    return {k: np.asarray(v)[0] for k, v in out.items()}, masks[0]


def pairs(out):
    valid = out["pair_valid"]
    return sorted(
        zip(
            out["pair_instances"][valid].tolist(),
            out["pair_cells"][valid].tolist(),
            strict=True,
        )
    )


def test_one_instance_on_two_levels():
    # 40x40 square at (8..48): scale 40 lies in [1, 48] and [32, 128].
    # Centre of mass 27.5. Level 0 (S=8, 8 px cells): centre cell 3, centre
    # region 27.5 +- 4 -> cells 2..3. Level 1 (S=4, 16 px): cell 1 only.
    out, _ = encode([(2, (8, 48, 8, 48))])
    level0 = [2 * 8 + 2, 2 * 8 + 3, 3 * 8 + 2, 3 * 8 + 3]
    level1 = [64 + 1 * 4 + 1]
    expected = np.full(80, -1)
    expected[level0 + level1] = 2
    np.testing.assert_array_equal(out["category_targets"], expected)
    assert pairs(out) == [(0, c) for c in sorted(level0 + level1)]
    assert out["num_positive_cells"] == 5
    assert out["positives_overflow"] == 0


def test_instance_at_the_border():
    # 6x6 square in the top-right corner: level 0 only, centre (2.5, 60.5)
    # -> row 0, column 7; the centre region does not leave that cell.
    out, _ = encode([(1, (0, 6, 58, 64))])
    expected = np.full(80, -1)
    expected[7] = 1
    np.testing.assert_array_equal(out["category_targets"], expected)
    assert pairs(out) == [(0, 7)]


def test_centre_region_is_clamped_to_one_cell_around_the_centre():
    # center_sigma=1 makes the centre region the whole 48 px box (rows 0..5 of
    # S=8), but at most one cell around the centre cell (2) is kept: rows 1..3.
    out, _ = encode([(0, (0, 48, 0, 48))], center_sigma=1.0)
    level0 = sorted(i * 8 + j for i in (1, 2, 3) for j in (1, 2, 3))
    got = sorted(c for m, c in pairs(out) if c < 64)
    assert got == level0


def test_later_instance_wins_the_category_but_both_masks_stay():
    # Two identical squares with different labels claim the same cells.
    out, _ = encode([(0, (8, 24, 8, 24)), (1, (8, 24, 8, 24))])
    positive = out["category_targets"] >= 0
    assert np.all(out["category_targets"][positive] == 1)
    cells = sorted(np.flatnonzero(positive).tolist())
    assert pairs(out) == sorted([(0, c) for c in cells] + [(1, c) for c in cells])
    assert out["num_positive_cells"] == len(cells)  # distinct cells, mmdet's num_pos


def test_empty_ground_truth():
    out, _ = encode([])
    assert np.all(out["category_targets"] == -1)
    assert not out["pair_valid"].any()
    assert out["num_positive_cells"] == 0


def test_positive_cap_counts_overflow():
    out, _ = encode([(2, (8, 48, 8, 48))], max_positives=3)
    assert out["pair_valid"].sum() == 3
    assert out["num_pairs"] == 5
    assert out["positives_overflow"] == 2


def test_mask_targets_follow_mmcv_imrescale():
    # mmcv.imrescale(mask, 1/4) (cv2 bilinear, half-pixel, rounding half up)
    # samples the centre of each 4x4 block: the mean of pixels 4i+1, 4i+2
    # in each direction, >= 0.5.
    rng = np.random.default_rng(3)
    mask = (rng.random((SIZE, SIZE)) > 0.5).astype(np.uint8)
    masks = np.zeros((1, 1, SIZE, SIZE), np.uint8)
    masks[0, 0] = mask
    encoder = SOLOv2TargetEncoder(num_grids=(8,), scale_ranges=((1, 1000),))
    out = encoder(
        masks,
        np.zeros((1, 1), np.int32),
        np.array([[[0, 0, SIZE, SIZE]]], np.float32),
        mask_size=(16, 16),
    )
    centre = mask.reshape(16, 4, 16, 4)[:, 1:3, :, 1:3].mean(axis=(1, 3))
    expected = (centre >= 0.5).astype(np.float32).reshape(-1)
    np.testing.assert_array_equal(np.asarray(out["mask_targets"])[0, 0], expected)


def test_empty_mask_and_padding_are_ignored():
    masks = np.zeros((1, 2, SIZE, SIZE), np.uint8)
    labels = np.array([[0, -1]], np.int32)  # slot 0: empty mask, slot 1: padding
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10]]], np.float32)
    masks[0, 1, :10, :10] = 1
    encoder = SOLOv2TargetEncoder(num_grids=(8, 4), scale_ranges=((1, 48), (32, 128)))
    out = encoder(masks, labels, boxes, mask_size=(16, 16))
    assert np.all(np.asarray(out["category_targets"]) == -1)


def test_mismatched_levels_raise():
    with pytest.raises(ValueError, match=r"one \(lower, upper\) pair per level"):
        SOLOv2TargetEncoder(num_grids=(8, 4), scale_ranges=((1, 48),))


def test_center_sigma_is_not_the_nms_sigma_and_old_names_still_load():
    from helpers import tiny_model

    import keras_solov2

    model = tiny_model(center_sigma=0.5, nms_sigma=3.0)
    assert model.target_encoder.center_sigma == 0.5 and model.center_sigma == 0.5
    assert model.decoder.nms_sigma == 3.0
    # A config saved before the rename holds `sigma`: it loads as center_sigma.
    config = model.get_config()
    encoder = config["target_encoder"]["config"]
    encoder["sigma"] = encoder.pop("center_sigma")
    old = keras_solov2.SOLOv2.from_config(config)
    assert old.center_sigma == 0.5 and old.nms_sigma == 3.0
    # The old keyword of the layer warns and gives the same targets.
    with pytest.warns(DeprecationWarning, match="center_sigma"):
        layer = SOLOv2TargetEncoder(
            num_grids=(8, 4), scale_ranges=((1, 48), (32, 128)), sigma=1.0
        )
    assert layer.center_sigma == 1.0
    with pytest.raises(ValueError, match="`center_sigma`"):
        layer.center_sigma = 0.0
