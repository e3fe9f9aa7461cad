"""Settings that a built layer reads at call time, validated when set."""


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
