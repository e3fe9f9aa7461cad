"""Image preprocessing for SOLOv2: keep-ratio resize, normalisation and padding.

The conventions are mmdetection's (`DetDataPreprocessor` with `bgr_to_rgb=True`):
images are RGB, normalised with the ImageNet statistics on a 0..255 scale, and
padded with zeros *after* normalisation at the bottom and right, up to a multiple
of `size_divisor`.
"""

# ImageNet statistics on the 0..255 scale, RGB order (torchvision x 255).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def rescale_size(height, width, scale):
    """Keep-ratio output size of `mmcv.imrescale(img, scale)`.

    Args:
        height: int. Input image height.
        width: int. Input image width.
        scale: tuple of two ints, `(long_edge_max, short_edge_max)` in either
            order, e.g. `(1333, 800)`.

    Returns:
        `(new_height, new_width)` ints. The factor is
        `min(max(scale) / max(h, w), min(scale) / min(h, w))` and each side is
        rounded with `int(side * factor + 0.5)`, exactly as mmcv does.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)
