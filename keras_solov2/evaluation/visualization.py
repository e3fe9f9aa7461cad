"""Drawing of instance-segmentation predictions (numpy + PIL), and the grid
of ground truth against predictions that a training run ends with."""

import colorsys
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keras_solov2.evaluation.ground_truth import coco_source
from keras_solov2.io import ImageError, load_image


def instance_color(index):
    """A bright RGB colour for instance `index`; nearby indices differ."""
    hue = (index * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return np.array([red, green, blue]) * 255.0


def _as_rgb_uint8(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
        if image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image[..., :3]


def _edges(mask):
    """Pixels of `mask` that have a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = (
        padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
    return mask & ~interior


def _box_sums(mask):
    """Summed-area table of `mask`, one row and column of zeros in front."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0), axis=1)
    return table


def _place_caption(mask, size, placed, image_shape):
    """Top-left corner `(x, y)` of a `size = (w, h)` caption for `mask`.

    The caption goes at a point inside its mask where its box does not
    cover a caption already placed, stays inside the image and covers as
    much of its own mask as possible (so that it reads as this mask's),
    preferring points near the mask's centre. When every such point
    collides (small masks crowded by captions), the box goes where it
    overlaps the placed captions least, inside the mask or around it.
    """
    height, width = image_shape
    w, h = min(size[0], width), min(size[1], height)
    rows, cols = np.nonzero(mask)
    step = max(1, min(w, h) // 2)
    # Candidate centres: the mask's pixels on a grid, and points around its
    # bounding box (above, below, left, right) for when the inside is full.
    keep = (rows % step == 0) & (cols % step == 0)
    cy, cx = rows[keep], cols[keep]
    if cy.size == 0:
        cy, cx = rows, cols
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    middle_x, middle_y = (left + right) // 2, (top + bottom) // 2
    ring_x = np.array([middle_x, middle_x, left - w // 2 - 1, right + w // 2 + 1])
    ring_y = np.array([top - h // 2 - 1, bottom + h // 2 + 1, middle_y, middle_y])
    cx = np.concatenate([cx, ring_x])
    cy = np.concatenate([cy, ring_y])
    x0 = np.clip(cx - w // 2, 0, width - w)
    y0 = np.clip(cy - h // 2, 0, height - h)
    sums = _box_sums(mask)
    covered = sums[y0 + h, x0 + w] - sums[y0, x0 + w] - sums[y0 + h, x0] + sums[y0, x0]
    overlap = np.zeros(len(x0), np.int64)
    for px0, py0, px1, py1 in placed:
        overlap += np.maximum(
            0, np.minimum(x0 + w, px1) - np.maximum(x0, px0)
        ) * np.maximum(0, np.minimum(y0 + h, py1) - np.maximum(y0, py0))
    centre_y, centre_x = rows.mean(), cols.mean()
    distance = np.hypot(x0 + w / 2 - centre_x, y0 + h / 2 - centre_y)
    # Least overlap first, then most of the own mask, then nearest the centre.
    best = np.lexsort((distance, -covered, overlap))[0]
    return int(x0[best]), int(y0[best])


def draw_instances(
    image,
    masks,
    labels,
    scores,
    class_names=None,
    score_threshold=0.3,
    alpha=0.5,
):
    """Overlays instance masks, their outlines and `label score` captions.

    Instances with a negative label (padding) or a score below
    `score_threshold` are skipped. Each drawn instance gets its own colour;
    its outline is drawn opaque and its caption sits inside the mask, away
    from the captions already drawn (instances are taken in the given
    order, which for `predict`'s output is by score), so that neighbouring
    masks' captions do not cover each other while there is room.

    Args:
        image: `(H, W, 3)` or `(H, W)` image, uint8 or float (floats in
            `[0, 1]` are scaled to `[0, 255]`).
        masks: `(D, H, W)` binary masks at the image size.
        labels: int `(D,)` class indices, `-1` for padding.
        scores: float `(D,)` scores.
        class_names: optional sequence of names indexed by label. Defaults
            to the label number.
        score_threshold: float. Minimum score drawn. Defaults to `0.3`.
        alpha: float. Opacity of the mask fill. Defaults to `0.5`.

    Returns:
        A new uint8 array of shape `(H, W, 3)`.

    Example:
    >>> out = model.predict(images)
    >>> drawn = keras_solov2.evaluation.draw_instances(
    ...     images[0], out["masks"][0], out["labels"][0], out["scores"][0]
    ... )
    """
    canvas = _as_rgb_uint8(image).astype(np.float32)
    masks = np.asarray(masks).astype(bool)
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if masks.shape[0] and masks.shape[1:] != canvas.shape[:2]:
        raise ValueError(
            f"masks are {masks.shape[1:]} but the image is {canvas.shape[:2]}."
        )
    detections = []
    for index in range(len(labels)):
        label, score = int(labels[index]), float(scores[index])
        if label < 0 or score < score_threshold or not masks[index].any():
            continue
        color = instance_color(index)
        mask = masks[index]
        canvas[mask] = (1.0 - alpha) * canvas[mask] + alpha * color
        canvas[_edges(mask)] = color * 0.6
        name = class_names[label] if class_names is not None else str(label)
        detections.append((mask, f"{name} {score:.2f}", color))

    output = Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(output)
    font = ImageFont.load_default()
    for _, _, box, text, color in caption_layout(
        detections, canvas.shape[:2], draw, font
    ):
        x0, y0, x1, y1 = box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=tuple(int(c) for c in color))
        draw.text((x0 + 1, y0 + 1), text, fill=(0, 0, 0), font=font, anchor="lt")
    return np.asarray(output)


def caption_layout(detections, image_shape, draw=None, font=None):
    """Where `draw_instances` puts each caption, in drawing order.

    Args:
        detections: sequence of `(mask, text, color)`, a `(H, W)` boolean
            mask each, in the order the captions are placed.
        image_shape: `(H, W)` of the image.
        draw: optional `PIL.ImageDraw.ImageDraw` that measures the text.
        font: optional font. Defaults to Pillow's default font.

    Returns:
        A list of `(mask, index, box, text, color)`, with `box` the caption's
        `(x0, y0, x1, y1)` rectangle in pixels (`x1`, `y1` exclusive).
    """
    if draw is None:
        draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = font or ImageFont.load_default()
    placed, layout = [], []
    for index, (mask, text, color) in enumerate(detections):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, anchor="lt")
        size = (int(math.ceil(right - left)) + 2, int(math.ceil(bottom - top)) + 2)
        x, y = _place_caption(mask, size, placed, image_shape)
        box = (x, y, x + min(size[0], image_shape[1]), y + min(size[1], image_shape[0]))
        placed.append(box)
        layout.append((mask, index, box, text, color))
    return layout


def save_prediction_grid(
    images,
    predictions,
    path,
    class_names=None,
    score_threshold=0.3,
    alpha=0.5,
    columns=None,
    padding=4,
):
    """Draws the predictions of several images and saves them as one PNG.

    Args:
        images: sequence (or array) of `(H, W, 3)` images; sizes may differ.
        predictions: the batched dict of a SOLOv2 `predict` (`"masks"`
            `(B, D, H, W)` or a list of `(D, H_b, W_b)`, `"labels"`,
            `"scores"`, optional `"num_detections"`), or a list of per-image
            dicts with unbatched `"masks"`, `"labels"` and `"scores"`.
        path: str. Where to write the PNG.
        class_names: optional sequence of class names.
        score_threshold: float. Minimum score drawn. Defaults to `0.3`.
        alpha: float. Opacity of the mask fill. Defaults to `0.5`.
        columns: optional int. Number of columns. Defaults to about
            `sqrt(len(images))`.
        padding: int. White pixels between cells. Defaults to `4`.

    Returns:
        The grid as a uint8 `(H, W, 3)` array.

    Example:
    >>> keras_solov2.evaluation.save_prediction_grid(
    ...     images, model.predict(images), "predictions.png"
    ... )
    """
    if isinstance(predictions, dict):
        count = predictions.get("num_detections")
        per_image = []
        for b in range(len(images)):
            n = None if count is None else int(np.reshape(count, (-1,))[b])
            per_image.append(
                {
                    key: np.asarray(predictions[key][b])[:n]
                    for key in ("masks", "labels", "scores")
                }
            )
    else:
        per_image = list(predictions)
    drawn = [
        draw_instances(
            image,
            pred["masks"],
            pred["labels"],
            pred["scores"],
            class_names=class_names,
            score_threshold=score_threshold,
            alpha=alpha,
        )
        for image, pred in zip(images, per_image, strict=True)
    ]
    if not drawn:
        raise ValueError("`images` is empty.")
    columns = columns or math.ceil(math.sqrt(len(drawn)))
    rows = math.ceil(len(drawn) / columns)
    cell_h = max(d.shape[0] for d in drawn)
    cell_w = max(d.shape[1] for d in drawn)
    grid = np.full(
        (
            rows * cell_h + (rows + 1) * padding,
            columns * cell_w + (columns + 1) * padding,
            3,
        ),
        255,
        dtype=np.uint8,
    )
    for i, cell in enumerate(drawn):
        top = padding + (i // columns) * (cell_h + padding)
        left = padding + (i % columns) * (cell_w + padding)
        grid[top : top + cell.shape[0], left : left + cell.shape[1]] = cell
    Image.fromarray(grid).save(path, format="PNG")
    return grid


def save_ground_truth_grid(
    model, annotation_file, image_dir, path, count=4, on_invalid="raise"
):
    """Saves a PNG with, per row, an image's ground truth and the model's
    predictions: what `keras_solov2.training.train` writes at the end of a
    run (`predictions.png`).

    Args:
        model: a `keras_solov2.SOLOv2`.
        annotation_file: str. A COCO instances json.
        image_dir: str. Its image folder.
        path: str. Where to write the PNG.
        count: int. Rows: the first `count` images that can be read.
            Defaults to `4`.
        on_invalid: str. An image file that is missing or cannot be read:
            `"raise"` its error (the default) or `"skip"` it and take the
            next one.
    """
    coco, _, _ = coco_source(annotation_file)
    ids = sorted(coco.getImgIds())
    label_of = {
        int(c): i for i, c in enumerate(model.category_ids or sorted(coco.getCatIds()))
    }
    images, drawn, skipped = [], [], []
    for info in coco.loadImgs(ids):
        if len(images) == 2 * count:
            break
        try:
            image = load_image(os.path.join(image_dir, info["file_name"]))
        except (FileNotFoundError, ImageError):
            if on_invalid != "skip":
                raise
            skipped.append(info["file_name"])
            continue
        anns = [
            a
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]]))
            if not a.get("iscrowd")
        ]
        gt_masks = (
            np.stack([coco.annToMask(a) for a in anns])
            if anns
            else np.zeros((0, *image.shape[:2]), np.uint8)
        )
        prediction = model.predict(image[None], verbose=0)
        n = int(prediction["num_detections"][0])
        images += [image, image]
        drawn += [
            {
                "masks": gt_masks,
                "labels": np.asarray(
                    [label_of.get(a["category_id"], -1) for a in anns], np.int32
                ),
                "scores": np.ones(len(anns), np.float32),
            },
            {
                "masks": prediction["masks"][0, :n],
                "labels": prediction["labels"][0, :n],
                "scores": prediction["scores"][0, :n],
            },
        ]
    if skipped:
        print(
            f"{path}: left out {len(skipped)} unreadable image(s): "
            + ", ".join(skipped)
        )
    save_prediction_grid(images, drawn, path, class_names=model.class_names, columns=2)
