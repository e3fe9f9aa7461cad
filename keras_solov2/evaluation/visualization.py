"""Drawing of instance-segmentation predictions (numpy + PIL only)."""

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont


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
    its outline is drawn opaque and its caption sits at the top-left corner
    of the mask.

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
    captions = []
    for index in range(len(labels)):
        label, score = int(labels[index]), float(scores[index])
        if label < 0 or score < score_threshold or not masks[index].any():
            continue
        color = instance_color(index)
        mask = masks[index]
        canvas[mask] = (1.0 - alpha) * canvas[mask] + alpha * color
        canvas[_edges(mask)] = color * 0.6
        name = class_names[label] if class_names is not None else str(label)
        rows, cols = np.nonzero(mask)
        captions.append(
            (int(cols.min()), int(rows.min()), f"{name} {score:.2f}", color)
        )

    output = Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8))
    if captions:
        draw = ImageDraw.Draw(output)
        font = ImageFont.load_default()
        for x, y, text, color in captions:
            left, top, right, bottom = draw.textbbox((x, y), text, font=font)
            draw.rectangle(
                (left, top, right, bottom), fill=tuple(int(c) for c in color)
            )
            draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(output)


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
