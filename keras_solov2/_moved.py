"""Modules that moved, kept at their old names for one release.

`keras_solov2.cli`, `keras_solov2.web` and `keras_solov2.inference` are now
`keras_solov2.app.cli`, `keras_solov2.app.web` and `keras_solov2.app.outputs`.
Each old file calls `alias` with its new home: the import warns
(`DeprecationWarning`) and gives the new module itself, so that
`keras_solov2.cli is keras_solov2.app.cli` and patching one patches both.
"""

import importlib
import sys
import warnings

# old name -> new name
MOVED = {
    "keras_solov2.cli": "keras_solov2.app.cli",
    "keras_solov2.inference": "keras_solov2.app.outputs",
    "keras_solov2.web": "keras_solov2.app.web",
}


def alias(name, old):
    """Warns that `old` moved and returns its new module; an import of `old`
    (`name == old`, not `python -m`) gets the new module in its place."""
    new = MOVED[old]
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}.",
        DeprecationWarning,
        stacklevel=3,
    )
    module = importlib.import_module(new)
    if name == old:
        sys.modules[old] = module  # the import system returns this, not the shim
    return module
