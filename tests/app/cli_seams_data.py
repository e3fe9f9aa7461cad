"""The data of the CLI seam tests (test_cli_seams.py, test_cli_seams_hang.py):
shapes images, one of them a truncated JPEG, and a tiny preset. A test file
takes the module-scoped fixture by name (`data = cli_seams_data.data`)."""

import os

import pytest
from helpers import tiny_model

from keras_solov2.data import generate_shapes_dataset

BAD = "000003.jpg"


def truncate(path):
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Shapes data whose image 3 is a truncated JPEG, a tiny preset."""
    root = tmp_path_factory.mktemp("seams")
    annotations = generate_shapes_dataset(
        str(root / "train"), 5, image_size=(64, 64), seed=0, max_shapes=2
    )
    images = str(root / "train" / "images")
    truncate(os.path.join(images, BAD))
    tiny_model(
        num_classes=4, class_names=["circle", "triangle", "square", "star"]
    ).save_to_preset(str(root / "preset"))
    return root, annotations, images
