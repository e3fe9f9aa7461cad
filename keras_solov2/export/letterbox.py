"""Letterboxing: what an app does to a camera frame before the `.tflite` model."""

import numpy as np

from keras_solov2.utils import image_geometry

# The ImageNet mean rounded to uint8: the letterbox padding. After the
# model's normalisation it is within 0.006 of mmdetection's zero padding.
PAD_VALUE = tuple(int(round(v)) for v in image_geometry.PIXEL_MEAN)


def letterbox(image, input_size):
    """Fits an RGB image into `input_size`, keeping its aspect ratio.

    The image is resized (bilinear, antialiased when shrinking) by the
    largest factor that fits `(height, width)`, placed at the top left and
    padded at the bottom and right with `PAD_VALUE`, as the exported
    model's own padding does. A detection's box in the canvas maps back to
    the original image by dividing by `scale`; its mask is the canvas mask
    cropped to `resized_size` and resized to the original size.

    Args:
        image: uint8 `(h, w, 3)` array (0..255 RGB).
        input_size: `(height, width)` of the exported model's input.

    Returns:
        `(canvas, scale, resized_size)`: uint8 `(height, width, 3)`, the
        resize factor and the `(h', w')` of the image inside the canvas.
    """
    import tensorflow as tf

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"letterbox takes one (h, w, 3) RGB image; got {image.shape}.")
    height, width = input_size
    h, w = image.shape[:2]
    scale = image_geometry.fit_factor(h, w, height, width)
    new_h = min(height, max(1, int(image_geometry.scaled_length(h, scale))))
    new_w = min(width, max(1, int(image_geometry.scaled_length(w, scale))))
    resized = tf.image.resize(
        image, (new_h, new_w), "bilinear", antialias=scale < 1
    ).numpy()
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = np.asarray(PAD_VALUE, np.uint8)
    canvas[:new_h, :new_w] = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return canvas, scale, (new_h, new_w)
