"""`keras_solov2.io`: image files in."""

import numpy as np
from PIL import Image

from keras_solov2.io import load_image


def test_load_image_applies_exif_orientation(tmp_path):
    shown = np.zeros((40, 60, 3), np.uint8)
    shown[:10, :30] = 255  # bright top-left block, as displayed
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1))).save(
        tmp_path / "p.jpg", quality=95, exif=exif.tobytes()
    )
    image = load_image(tmp_path / "p.jpg")
    assert image.shape == (40, 60, 3)
    assert np.abs(image.astype(float) - shown).mean() < 4
    assert load_image(tmp_path / "p.jpg", apply_exif_orientation=False).shape == (
        60,
        40,
        3,
    )
