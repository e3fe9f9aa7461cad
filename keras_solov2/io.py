"""Files in: image files, folders of images, and the paths of a COCO dataset.

`IMAGE_EXTENSIONS` is the one list of image file extensions: `keras-solov2
predict` picks a folder's images by them (`image_paths`, compared in lower
case), and every one of them is a format that Pillow reads, as `load_image`
does. `load_image` reads an image file for prediction and evaluation as the
training readers decode it (`keras_solov2.data.images`): RGB, EXIF
orientation applied to JPEGs, an `ImageError` naming a file that cannot be
read.
"""

import os

import numpy as np
from PIL import Image, ImageOps

from keras_solov2.data.images import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_paths(paths):
    """Image files from files and folders (a folder's images in name order)."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(
                n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not names:
                raise FileNotFoundError(f"No image files in the folder {path!r}.")
            found += [os.path.join(path, n) for n in names]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f"No such image file or folder: {path!r}.")
    return found


def load_image(path, apply_exif_orientation=True):
    """Reads an image file as an RGB uint8 array of shape `(H, W, 3)`.

    JPEGs are turned as their EXIF orientation tag says, like the training
    readers do (`keras_solov2.data.images`), unless
    `apply_exif_orientation=False`.

    Args:
        path: str or path-like. The image file.
        apply_exif_orientation: bool. Defaults to `True`.

    Raises:
        FileNotFoundError: naming the file, if it does not exist.
        ImageError: naming the file, if PIL cannot read it (not an image,
            truncated, corrupt).

    Example:
    >>> image = keras_solov2.io.load_image("images/000000000139.jpg")
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such image file: {path!r}.")
    try:
        with Image.open(path) as image:
            if apply_exif_orientation and image.format == "JPEG":
                image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as error:  # PIL: truncated, unidentified, ...
        reason = f"{type(error).__name__}: {error}"
        raise ImageError(
            f"Image {path!r} cannot be read ({reason}). Fix or remove the "
            "image, or pass on_invalid='skip' to leave such images out and "
            "count them.",
            reason,
        ) from None


def check_on_invalid(on_invalid):
    """A `ValueError` unless `on_invalid`, what an invalid annotation or
    image file does, is `"raise"` or `"skip"`."""
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"`on_invalid` must be 'raise' or 'skip', got {on_invalid!r}.")


def check_coco_paths(annotation_file, image_dir, split=""):
    """A `FileNotFoundError` naming the path unless the COCO json and the
    image folder exist (`split`, e.g. "validation", goes into the message)."""
    what = f"{split} " if split else ""
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(
            f"The {what}annotation file {annotation_file!r} does not exist."
        )
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"The {what}image folder {image_dir!r} does not exist.")
