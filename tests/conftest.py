"""Fixtures shared by every test; the plain helpers are in helpers.py."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from helpers import tiny_model  # noqa: E402


@pytest.fixture
def tiny():
    return tiny_model
