"""Settings that a built layer reads at call time, validated when set; and
the checks that validate them (`positive_int`, `number`, ...)."""

import math

import numpy as np


class LiveSettings:
    """Mixin for layers whose settings may change after construction.

    A subclass lists its user-facing settings once in `SETTINGS` and checks a
    value in `validate_setting(name, value)` (returning the normalised
    value, or raising a `ValueError` that names the setting). Every
    assignment, in `__init__` or later, goes through that check, and the
    layer reads its settings at call time, so a changed setting takes effect
    at the next trace. `keras_solov2.SOLOv2` rebuilds its train, test and
    predict functions when any setting of its sublayers changes.
    """

    SETTINGS = ()

    def __setattr__(self, name, value):
        if name in self.SETTINGS:
            value = self.validate_setting(name, value)
        super().__setattr__(name, value)

    def validate_setting(self, name, value):
        return value

    def settings(self):
        """The current settings, `{name: value}`."""
        return {name: getattr(self, name) for name in self.SETTINGS}


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    return int(value)


def positive_ints(name, value):
    try:
        values = tuple(value)
    except TypeError:
        values = None
    if not values or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
        for v in values
    ):
        raise ValueError(
            f"`{name}` must be a non-empty sequence of ints >= 1, got {value!r}."
        )
    return tuple(int(v) for v in values)


def number(name, value, low, high, include_low=True):
    """`value` as a float in `[low, high]` (`(low, high]` if not `include_low`)."""
    numbers = (int, float, np.integer, np.floating)
    valid = isinstance(value, numbers) and not isinstance(value, bool)
    if valid:
        valid = (value >= low if include_low else value > low) and value <= high
    if not valid:
        if high == math.inf:
            bounds = f"{'>=' if include_low else '>'} {low:g}"
        else:
            bounds = f"in {'[' if include_low else '('}{low:g}, {high:g}]"
        raise ValueError(f"`{name}` must be a number {bounds}, got {value!r}.")
    return float(value)


def choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value
