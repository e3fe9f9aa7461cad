"""Deprecated: `keras_solov2.app.cli`, under its old name for one release.

`python -m keras_solov2` runs the command line.
"""

import sys

from keras_solov2 import _moved

_cli = _moved.alias(__name__, "keras_solov2.cli")

if __name__ == "__main__":
    sys.exit(_cli.main())
