"""The synthetic shapes' polygons and their COCO encodings (exact, via pycocotools).

`shape_polygon` draws one shape's vertices; `polygon_mask` rasterises COCO
polygons as `pycocotools` does; `mask_to_polygons` traces a visible mask back
to polygons along its pixel edges (holes joined by zero-width slits), which
`keras_solov2.data.shapes` checks against the mask it painted.
"""

import math
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

SHAPE_NAMES = (
    "circle",
    "ellipse",
    "triangle",
    "square",
    "rectangle",
    "hexagon",
    "star",
)


def shape_polygon(
    name: str, rng: np.random.Generator, cx: float, cy: float, radius: float
) -> np.ndarray:
    """Vertices `(N, 2)` (x, y) of a shape inscribed in a circle of `radius`."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    if name in ("circle", "ellipse"):
        n = int(np.clip(radius * 1.5, 16, 64))
        t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
        rx = radius
        ry = radius if name == "circle" else radius * rng.uniform(0.45, 0.8)
        pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    elif name == "triangle":
        t = np.array([0.0, 2.0, 4.0]) * math.pi / 3.0
        t = t + rng.uniform(-0.25, 0.25, size=3)
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    elif name == "square":
        t = np.arange(4) * math.pi / 2.0 + math.pi / 4.0
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    elif name == "rectangle":
        half = math.atan(rng.uniform(0.35, 0.7))
        t = np.array([half, math.pi - half, math.pi + half, -half])
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    elif name == "hexagon":
        t = np.arange(6) * math.pi / 3.0
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    elif name == "star":
        inner = radius * rng.uniform(0.38, 0.5)
        t = np.arange(10) * math.pi / 5.0
        r = np.where(np.arange(10) % 2 == 0, radius, inner)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:  # Guarded by the caller.
        raise ValueError(f"Unknown shape '{name}'.")
    cos, sin = math.cos(angle), math.sin(angle)
    rot = np.array([[cos, -sin], [sin, cos]])
    pts = pts @ rot.T + np.array([cx, cy])
    return np.round(pts, 2)


def polygon_mask(polygons: list, height: int, width: int) -> np.ndarray:
    """Decode COCO polygons exactly as `pycocotools` (`annToMask`) does."""
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _trace_loops(mask: np.ndarray) -> list:
    """Closed pixel-edge loops of a binary mask.

    Vertices are pixel corners `(x, y)`; pixel `(r, c)` covers
    `[c, c + 1) x [r, r + 1)`, the COCO convention. Outer boundaries run
    clockwise on screen (positive shoelace area with y pointing down), holes
    anti-clockwise. At a vertex shared by two diagonal pixels the tracer turns
    right, which keeps diagonal neighbours in separate loops.

    Returns:
        A list of `(vertices (N, 2) int array, seed pixel (row, col))` where the
        seed pixel is a foreground pixel bordering the loop.
    """
    h, w = mask.shape
    p = np.pad(mask, 1)
    core = p[1:-1, 1:-1]
    w1 = w + 1
    outgoing = defaultdict(list)
    # (direction, start vertex id, end vertex id, pixel row, pixel col);
    # directions: 0 = +x, 1 = +y, 2 = -x, 3 = -y; vertex id = y * (w + 1) + x.
    for direction, neighbour, start_offset, step in (
        (0, p[:-2, 1:-1], (0, 0), 1),
        (1, p[1:-1, 2:], (0, 1), w1),
        (2, p[2:, 1:-1], (1, 1), -1),
        (3, p[1:-1, :-2], (1, 0), -w1),
    ):
        rows, cols = np.nonzero(core & ~neighbour)
        starts = (rows + start_offset[0]) * w1 + cols + start_offset[1]
        for s, r, c in zip(starts.tolist(), rows.tolist(), cols.tolist(), strict=True):
            outgoing[s].append((direction, s + step, r, c))

    loops = []
    while outgoing:
        start = next(iter(outgoing))
        edges = outgoing[start]
        direction, end, r, c = edges.pop()
        if not edges:
            del outgoing[start]
        seed = (r, c)
        vertices = [start]
        directions = [direction]
        current = end
        while current != start:
            edges = outgoing[current]
            if len(edges) == 1:
                choice = 0
            else:
                right = (direction + 1) % 4
                choice = next((i for i, e in enumerate(edges) if e[0] == right), 0)
            direction, nxt, _, _ = edges.pop(choice)
            if not edges:
                del outgoing[current]
            vertices.append(current)
            directions.append(direction)
            current = nxt
        # Keep only the corners (where the direction changes).
        directions = np.asarray(directions)
        corner = directions != np.roll(directions, 1)
        ids = np.asarray(vertices)[corner]
        pts = np.stack([ids % w1, ids // w1], axis=1)
        loops.append((pts, seed))
    return loops


def _signed_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _point_in_polygon(x: float, y: float, pts: np.ndarray) -> bool:
    xs, ys = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    crosses = (ys > y) != (yn > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = xs + (y - ys) * (xn - xs) / (yn - ys)
    return bool(np.count_nonzero(crosses & (x < x_at)) % 2)


def mask_to_polygons(mask: np.ndarray) -> list:
    """COCO polygons (flat coordinate lists) whose union is `mask`.

    Holes are joined to the outer loop that contains them through a
    zero-width slit, which `pycocotools`' even-odd rasteriser cancels out.
    """
    outers, holes = [], []
    for pts, seed in _trace_loops(mask):
        area = _signed_area(pts)
        (outers if area > 0 else holes).append((pts, seed, abs(area)))
    polygons = [[pts, area] for pts, _, area in outers]
    for hole, seed, _ in holes:
        cx, cy = seed[1] + 0.5, seed[0] + 0.5
        containing = [
            i for i, (pts, _) in enumerate(polygons) if _point_in_polygon(cx, cy, pts)
        ]
        if not containing:
            continue  # Left to the caller's verification.
        target = min(containing, key=lambda i: polygons[i][1])
        outer = polygons[target][0]
        d = np.sum(
            (outer[:, None, :].astype(np.int64) - hole[None, :, :]) ** 2, axis=-1
        )
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        bridged = np.concatenate(
            [outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]], axis=0
        )
        polygons[target][0] = bridged
    return [pts.astype(np.float64).reshape(-1).tolist() for pts, _ in polygons]


def encode_rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
