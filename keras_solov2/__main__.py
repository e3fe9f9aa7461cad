"""`python -m keras_solov2 ...`: the `keras-solov2` command line."""

import sys

from keras_solov2.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
