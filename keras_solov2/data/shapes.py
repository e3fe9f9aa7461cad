"""Deterministic synthetic-shapes instance segmentation dataset in COCO format.

Every image has a textured background (smooth noise, gradients, stripes or a
checkerboard, plus pixel noise) and a few randomly coloured, rotated shapes of
very different sizes. Later shapes are drawn on top of earlier ones, so
annotations describe the *visible* part of each shape. A new shape is only
placed if every shape it covers keeps a reasonable visible area; otherwise the
placement is rejected (and counted in the json's `info`), so no annotated shape
is reduced to a sliver and nothing visible is left unannotated.

Masks are rasterised with `pycocotools` itself, so the annotation decoded with
`pycocotools` is exactly the mask used to paint the image:

- Shapes that are not occluded are annotated with their own vertex polygon.
- Occluded shapes are annotated with polygons traced along the pixel edges of
  the visible mask (holes are joined to their outer boundary by a zero-width
  slit). Each traced annotation is decoded again and compared with the visible
  mask; if they differ it is stored as RLE instead and counted in
  `info["polygon_fallbacks"]`.
- With `mask_format="rle"` every annotation is a compressed RLE.
"""

import json
import math
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from keras_solov2.data.shape_polygons import (
    SHAPE_NAMES,
    encode_rle,
    mask_to_polygons,
    polygon_mask,
    shape_polygon,
)


def _background(
    rng: np.random.Generator, height: int, width: int, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """A random textured float32 background `(height, width, 3)` in 0..255."""

    def colour():
        return rng.uniform(0.0, 255.0, size=3).astype(np.float32)

    def layer(kind):
        if kind == "gradient":
            theta = rng.uniform(0.0, 2.0 * math.pi)
            t = xx * math.cos(theta) + yy * math.sin(theta)
            t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
            c0, c1 = colour(), colour()
            return c0 + t[..., None] * (c1 - c0)
        if kind == "stripes":
            theta = rng.uniform(0.0, math.pi)
            period = rng.uniform(4.0, 24.0)
            t = (xx * math.cos(theta) + yy * math.sin(theta)) / period
            if rng.random() < 0.5:
                t = (np.mod(t, 1.0) < rng.uniform(0.3, 0.7)).astype(np.float32)
            else:
                t = 0.5 + 0.5 * np.sin(2.0 * math.pi * t)
            c0, c1 = colour(), colour()
            return c0 + t[..., None] * (c1 - c0)
        if kind == "checker":
            cell = int(rng.integers(4, 21))
            t = (yy.astype(np.int64) // cell + xx.astype(np.int64) // cell) % 2
            c0, c1 = colour(), colour()
            return c0 + t[..., None].astype(np.float32) * (c1 - c0)
        # Smooth random blobs: a coarse random grid upsampled bilinearly.
        gh, gw = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        grid = rng.uniform(0.0, 255.0, size=(gh, gw, 3)).astype(np.uint8)
        up = Image.fromarray(grid).resize((width, height), Image.BILINEAR)
        return np.asarray(up, dtype=np.float32)

    kinds = ("blobs", "gradient", "stripes", "checker")
    base = layer(kinds[int(rng.integers(len(kinds)))])
    if rng.random() < 0.5:
        alpha = rng.uniform(0.2, 0.5)
        base = (1.0 - alpha) * base + alpha * layer(kinds[int(rng.integers(4))])
    sigma = rng.uniform(2.0, 20.0)
    return base + rng.normal(0.0, sigma, size=base.shape).astype(np.float32)


def _check_args(
    image_size, max_shapes, class_names, min_size, max_size, min_shapes
) -> tuple:
    height, width = (int(v) for v in image_size)
    if height < 16 or width < 16:
        raise ValueError(f"`image_size` must be at least 16x16, got {image_size}.")
    class_names = tuple(class_names)
    unknown = [n for n in class_names if n not in SHAPE_NAMES]
    if not class_names or unknown or len(set(class_names)) != len(class_names):
        raise ValueError(
            f"`class_names` must be distinct names from {SHAPE_NAMES}, "
            f"got {class_names}."
        )
    if not 0.0 < min_size <= max_size <= 1.0:
        raise ValueError(
            "Expected 0 < min_size <= max_size <= 1, got "
            f"min_size={min_size}, max_size={max_size}."
        )
    if not 0 <= min_shapes <= max_shapes or max_shapes < 1:
        raise ValueError(
            f"Expected 0 <= min_shapes <= max_shapes and max_shapes >= 1, got "
            f"min_shapes={min_shapes}, max_shapes={max_shapes}."
        )
    return (height, width), class_names


def _render(
    index,
    image_size,
    seed,
    max_shapes,
    class_names,
    min_size,
    max_size,
    min_shapes,
    min_visible_fraction,
    min_visible_area,
    grid=None,
):
    """Image `index`: `(pixels uint8 (H, W, 3), shapes, rejected placements)`."""
    height, width = image_size
    if grid is None:
        grid = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = grid
    side = min(height, width)
    rng = np.random.default_rng([int(seed), int(index)])
    canvas = _background(rng, height, width, yy, xx)
    target = int(rng.integers(min_shapes, max_shapes + 1))
    shapes = []
    rejected = 0
    attempts = 0
    while len(shapes) < target and attempts < 10 * max(target, 1):
        attempts += 1
        label = int(rng.integers(len(class_names)))
        radius = 0.5 * side * rng.uniform(min_size, max_size)
        cx = rng.uniform(radius, width - radius)
        cy = rng.uniform(radius, height - radius)
        poly = shape_polygon(class_names[label], rng, cx, cy, radius)
        flat = poly.reshape(-1).tolist()
        full = polygon_mask([flat], height, width)
        area = int(full.sum())
        ok = area >= min_visible_area
        if ok:
            for s in shapes:
                left = int(np.count_nonzero(s["visible_mask"] & ~full))
                if left < max(min_visible_area, min_visible_fraction * s["area"]):
                    ok = False
                    break
        if not ok:
            rejected += 1
            continue
        for s in shapes:
            s["visible_mask"] &= ~full
        # Fill colour far enough from the background under the shape.
        under = canvas[full].mean(axis=0)
        for _ in range(10):
            fill = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
            if np.abs(fill - under).sum() >= 90.0:
                break
        theta = rng.uniform(0.0, 2.0 * math.pi)
        shade = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
        shade = 1.0 + rng.uniform(0.0, 0.3) * shade[full] / max(radius, 1.0)
        canvas[full] = fill[None, :] * shade[:, None]
        shapes.append(
            {
                "label": label,
                "name": class_names[label],
                "polygon": flat,
                "full_mask": full,
                "visible_mask": full.copy(),
                "area": area,
            }
        )
    noise = rng.normal(0.0, rng.uniform(1.0, 6.0), size=canvas.shape)
    canvas += noise.astype(np.float32)
    pixels = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return pixels, shapes, rejected


def render_shapes_image(
    index: int,
    image_size: tuple = (128, 128),
    seed: int = 0,
    max_shapes: int = 4,
    class_names: tuple = ("circle", "triangle", "square", "star"),
    min_size: float = 0.08,
    max_size: float = 0.7,
    min_shapes: int = 1,
    min_visible_fraction: float = 0.25,
    min_visible_area: int = 16,
) -> tuple:
    """Render image `index` of a synthetic-shapes dataset in memory.

    With the same arguments, this is exactly image `index` (id `index + 1`) of
    `generate_shapes_dataset` before JPEG compression, so it can be used to
    check the written annotations.

    Args:
        index: int. Image index (0-based).
        image_size, seed, max_shapes, class_names, min_size, max_size,
            min_shapes, min_visible_fraction, min_visible_area: see
            `generate_shapes_dataset`.

    Returns:
        `(image, shapes)`: `image` is uint8 `(H, W, 3)` RGB; `shapes` lists
        the placed shapes bottom to top, each a dict with `label` (0-based),
        `name`, `polygon` (flat vertex list of the whole shape), `full_mask`
        and `visible_mask` (bool `(H, W)`) and `area` (of the full mask).
    """
    image_size, class_names = _check_args(
        image_size, max_shapes, class_names, min_size, max_size, min_shapes
    )
    pixels, shapes, _ = _render(
        index,
        image_size,
        seed,
        max_shapes,
        class_names,
        min_size,
        max_size,
        min_shapes,
        min_visible_fraction,
        min_visible_area,
    )
    return pixels, shapes


def generate_shapes_dataset(
    output_dir: str,
    num_images: int,
    image_size: tuple = (128, 128),
    seed: int = 0,
    max_shapes: int = 4,
    mask_format: str = "polygon",
    class_names: tuple = ("circle", "triangle", "square", "star"),
    min_size: float = 0.08,
    max_size: float = 0.7,
    min_shapes: int = 1,
    min_visible_fraction: float = 0.25,
    min_visible_area: int = 16,
    jpeg_quality: int = 95,
) -> str:
    """Write a deterministic synthetic-shapes dataset in COCO format.

    Writes `output_dir/images/NNNNNN.jpg` (the zero-padded image id, ids
    starting at 1) and `output_dir/annotations.json` with `info`, `licenses`,
    `images`, `annotations` and `categories` (ids `1..len(class_names)` in the
    order of `class_names`). Each annotation has `segmentation` (polygons, or
    compressed RLE with `mask_format="rle"`), `bbox` `[x, y, w, h]` of the
    visible mask, `area` (visible pixel count), `iscrowd=0` and `category_id`.
    The annotation decoded by `pycocotools` equals the visible mask exactly.
    The same arguments always produce byte-identical files.

    Args:
        output_dir: str. Output folder; created if needed, files overwritten.
        num_images: int. Number of images.
        image_size: tuple of two ints. `(height, width)`. Defaults to
            `(128, 128)`.
        seed: int. Random seed; image `i` uses its own generator seeded with
            `(seed, i)`. Defaults to `0`.
        max_shapes: int. Maximum number of shapes per image. Defaults to `4`.
        mask_format: str. `"polygon"` or `"rle"`. Defaults to `"polygon"`.
        class_names: tuple of str. Shape classes, a subset of
            `("circle", "ellipse", "triangle", "square", "rectangle",
            "hexagon", "star")`. Defaults to
            `("circle", "triangle", "square", "star")`.
        min_size: float. Smallest shape diameter (of its circumscribed circle)
            as a fraction of the shorter image side. Defaults to `0.08`.
        max_size: float. Largest shape diameter, same unit. Defaults to `0.7`.
        min_shapes: int. Minimum number of shapes per image (`0` allows
            images without objects). Defaults to `1`.
        min_visible_fraction: float. A placement is rejected if it would leave
            any earlier shape with less than this fraction of its area
            visible. Defaults to `0.25`.
        min_visible_area: int. Same, as an absolute pixel count; also the
            smallest area of a new shape. Defaults to `16`.
        jpeg_quality: int. JPEG quality (4:4:4 chroma). Defaults to `95`.

    Returns:
        str. Path of the written `annotations.json`.
    """
    image_size, class_names = _check_args(
        image_size, max_shapes, class_names, min_size, max_size, min_shapes
    )
    if mask_format not in ("polygon", "rle"):
        raise ValueError(
            f"`mask_format` must be 'polygon' or 'rle', got {mask_format!r}."
        )
    if num_images < 0:
        raise ValueError(f"`num_images` must be >= 0, got {num_images}.")
    height, width = image_size
    image_dir = os.path.join(output_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    grid = np.mgrid[0:height, 0:width].astype(np.float32)

    images, annotations = [], []
    rejected = 0
    fallbacks = 0
    for index in range(num_images):
        pixels, shapes, rejected_here = _render(
            index,
            image_size,
            seed,
            max_shapes,
            class_names,
            min_size,
            max_size,
            min_shapes,
            min_visible_fraction,
            min_visible_area,
            grid=grid,
        )
        rejected += rejected_here
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        Image.fromarray(pixels).save(
            os.path.join(image_dir, file_name), quality=jpeg_quality, subsampling=0
        )
        images.append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width}
        )
        for s in shapes:
            visible = s["visible_mask"]
            rle = encode_rle(visible)
            counts = rle["counts"].decode("ascii")
            rle_json = {"size": [height, width], "counts": counts}
            if mask_format == "rle":
                segmentation = rle_json
            elif int(visible.sum()) == s["area"]:
                segmentation = [s["polygon"]]  # Not occluded: exact by design.
            else:
                segmentation = mask_to_polygons(visible)
                if not segmentation or not np.array_equal(
                    polygon_mask(segmentation, height, width), visible
                ):
                    fallbacks += 1
                    segmentation = rle_json
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": s["label"] + 1,
                    "segmentation": segmentation,
                    "area": int(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )

    data = {
        "info": {
            "description": "keras-solov2 synthetic shapes",
            "version": "1.0",
            "seed": int(seed),
            "image_size": [height, width],
            "mask_format": mask_format,
            "rejected_placements": rejected,
            "polygon_fallbacks": fallbacks,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(class_names)
        ],
    }
    path = os.path.join(output_dir, "annotations.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path
