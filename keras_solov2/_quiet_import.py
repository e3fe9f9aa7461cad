"""TensorFlow's start-up log, silenced for the `keras-solov2` console script.

TensorFlow's C++ side writes its start-up notes (CUDA probing, oneDNN) to
file descriptor 2 while it is imported, before any logging setting applies,
and `TF_CPP_MIN_LOG_LEVEL` does not stop all of them. For the console script
they would bury its one-line error messages, so the package's `__init__`
imports TensorFlow through `import_tensorflow_quietly` when the process is
that script without `--verbose`. Python-level errors are not affected: the
descriptor is restored before any of them can be printed.
"""

import os
import sys


def is_console_script():
    return (
        os.path.basename(sys.argv[0] if sys.argv else "") == "keras-solov2"
        and "--verbose" not in sys.argv
    )


def import_tensorflow_quietly():
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                pass  # another backend; keras imports what it needs
    finally:
        os.dup2(saved, 2)
        os.close(saved)
