"""Deprecated: `keras_solov2.app.outputs`, under its old name for one release."""

from keras_solov2 import _moved

_moved.alias(__name__, "keras_solov2.inference")
