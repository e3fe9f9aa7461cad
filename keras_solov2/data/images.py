"""Image files: a cheap structural check, EXIF orientation, in-graph decoding.

`inspect_image` runs in Python on the encoded bytes before TensorFlow decodes
them. TensorFlow's decoders fail on a truncated JPEG with a message that names
no file (`jpeg::Uncompress failed`), so the readers check the bytes first and
raise an `ImageError` that names the file and the json it came from.

EXIF orientation: cameras store the sensor's pixels plus a tag saying how to
turn them for display. Annotation tools (CVAT, Label Studio, browsers), PIL's
`ImageOps.exif_transpose`, OpenCV's `imread` (so mmdetection) and detectron2
all annotate and train on the displayed image, so the readers apply the tag by
default (JPEG files only, as OpenCV does).
"""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

ORIENTATION_TAG = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap height and width


class ImageError(ValueError):
    """An image file that cannot be decoded.

    The message names the file and says what to do; `reason` is what is
    wrong with it, for lists of skipped files.
    """

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


def _format(raw: bytes) -> str | None:
    if raw[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if raw[:2] == b"BM":
        return "bmp"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "webp"
    return None


def _jpeg_scan_start(raw: bytes) -> int:
    """Offset just after the first top-level SOS segment header.

    Walks the marker segments from SOI; raises `ValueError` when the
    structure is broken or ends before any scan.
    """
    pos = 2
    n = len(raw)
    while True:
        # Markers may be preceded by fill bytes 0xFF.
        while pos < n and raw[pos] == 0xFF and pos + 1 < n and raw[pos + 1] == 0xFF:
            pos += 1
        if pos + 4 > n:
            raise ValueError("it ends before the image data (truncated JPEG)")
        if raw[pos] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {pos} (corrupt JPEG)")
        marker = raw[pos + 1]
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            pos += 2
            continue
        if marker == 0xD9:
            raise ValueError("it ends before the image data (empty JPEG)")
        length = (raw[pos + 2] << 8) | raw[pos + 3]
        if length < 2:
            raise ValueError(f"bad JPEG segment length at byte {pos}")
        end = pos + 2 + length
        if marker == 0xDA:  # start of scan
            if end > n:
                raise ValueError("it ends inside the image data (truncated JPEG)")
            return end
        pos = end


def _orientation(raw: bytes) -> tuple:
    """`(orientation, problem)` of JPEG bytes: 1..8, and why it defaulted.

    A missing tag is 1 with no problem; an EXIF block PIL cannot read, or a
    value outside 1..8, is 1 with the reason, for the caller to report.
    """
    try:
        with Image.open(io.BytesIO(raw)) as pil:
            value = pil.getexif().get(ORIENTATION_TAG, 1)
    except Exception as e:  # PIL raises many types on broken EXIF blocks.
        return 1, f"unreadable EXIF block ({type(e).__name__}: {e})"
    if not isinstance(value, (int, np.integer)) or not 1 <= value <= 8:
        return 1, f"EXIF orientation {value!r} is not 1..8"
    return int(value), None


def inspect_image(raw: bytes, apply_exif_orientation: bool = True) -> dict:
    """Checks encoded image bytes and reads their size and EXIF orientation.

    Recognises JPEG, PNG, GIF, BMP and WebP. A JPEG must have a complete
    marker structure up to its first scan and an end-of-image marker after
    it (data appended after the image, as in motion photos, is fine); a PNG
    must contain its `IEND` chunk. Nothing is decoded.

    Args:
        raw: the file's bytes.
        apply_exif_orientation: bool. Read the JPEG EXIF orientation tag; if
            `False` the orientation is reported as `1`.

    Returns:
        dict with `format` (`"jpeg"`, `"png"`, ...), `height` and `width` as
        displayed (after the orientation), `stored_height`, `stored_width`,
        `orientation` (1..8, EXIF convention) and `exif_problem` (`None`, or
        why a broken orientation tag was read as 1).

    Raises:
        ValueError: with the reason (empty file, unknown format, truncated or
            corrupt data). Callers add the file name.
    """
    raw = bytes(raw)
    if not raw:
        raise ValueError("the file is empty")
    fmt = _format(raw)
    if fmt is None:
        raise ValueError(
            f"not a JPEG, PNG, GIF, BMP or WebP file (it starts with {raw[:8]!r})"
        )
    if fmt == "jpeg":
        scan = _jpeg_scan_start(raw)
        if raw.find(b"\xff\xd9", scan) < 0:
            raise ValueError(
                "no end-of-image marker after the image data (truncated JPEG; "
                "was a download or copy interrupted?)"
            )
    elif fmt == "png" and raw.rfind(b"IEND") < 0:
        raise ValueError("no IEND chunk (truncated PNG)")
    try:
        with Image.open(io.BytesIO(raw)) as pil:
            width, height = pil.size
    except Exception as e:
        raise ValueError(f"unreadable {fmt.upper()} header ({e})") from None
    orientation, exif_problem = 1, None
    if fmt == "jpeg" and apply_exif_orientation:
        orientation, exif_problem = _orientation(raw)
    shown = (width, height) if orientation in _TRANSPOSED else (height, width)
    return {
        "format": fmt,
        "height": shown[0],
        "width": shown[1],
        "stored_height": height,
        "stored_width": width,
        "orientation": orientation,
        "exif_problem": exif_problem,
    }


def orientation_note(info: dict, height: int, width: int) -> str:
    """A hint for a size mismatch that the EXIF orientation would explain."""
    stored = (info["stored_height"], info["stored_width"])
    if info["orientation"] in _TRANSPOSED and stored == (height, width):
        return (
            f" The file has EXIF orientation {info['orientation']} (displayed "
            "rotated) and the json size matches the stored, unrotated pixels: "
            "pass apply_exif_orientation=False if the annotations were made "
            "on the unrotated image."
        )
    if info["orientation"] == 1 and (info["stored_width"], info["stored_height"]) == (
        height,
        width,
    ):
        return (
            " Height and width are swapped: was the image rotated after "
            "annotation, or does it need apply_exif_orientation=True?"
        )
    return ""


# --- In-graph -----------------------------------------------------------------


def decode_rgb(raw: tf.Tensor) -> tf.Tensor:
    """Decode encoded image bytes to a uint8 `(h, w, 3)` RGB tensor.

    JPEGs with the accurate IDCT (what PIL / OpenCV use); anything else (PNG,
    BMP, GIF, WebP) through `decode_image`. Grayscale/RGBA become RGB. The
    pixels are as stored: see `apply_orientation`.
    """
    image = tf.cond(
        tf.io.is_jpeg(raw),
        lambda: tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(raw, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def apply_orientation(image: tf.Tensor, orientation) -> tf.Tensor:
    """Turns stored pixels `(h, w, C)` into the displayed image.

    `orientation` is the EXIF value (int tensor, 1..8; anything else is
    treated as 1), with the same result as PIL's `ImageOps.exif_transpose`.
    """
    transpose = lambda x: tf.transpose(x, [1, 0, 2])
    branches = [
        lambda: image,  # 1: as stored
        lambda: image[:, ::-1],  # 2: mirrored left-right
        lambda: image[::-1, ::-1],  # 3: rotated 180
        lambda: image[::-1],  # 4: mirrored top-bottom
        lambda: transpose(image),  # 5: transposed
        lambda: transpose(image)[:, ::-1],  # 6: rotate 90 clockwise to show
        lambda: transpose(image)[::-1, ::-1],  # 7: transverse
        lambda: transpose(image)[::-1],  # 8: rotate 90 counter-clockwise
    ]
    index = tf.cast(orientation, tf.int32) - 1
    index = tf.where((index < 0) | (index > 7), 0, index)
    out = tf.switch_case(index, branches)
    out.set_shape([None, None, image.shape[-1]])
    return out
