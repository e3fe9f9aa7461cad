"""The `keras-solov2` command line: `main(argv)`.

The arguments are `keras_solov2.app.parser`'s and the commands
`keras_solov2.app.commands`'; this module runs them and turns errors into
one line and an exit status.
"""

import functools
import gc
import sys
import traceback
import warnings

from keras_solov2.app.commands import first_line, run
from keras_solov2.app.parser import build_parser

# Errors that are the user's (a missing file, a bad argument, broken data):
# one line, exit status 2, no traceback unless --verbose.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, OSError)

# The library's words for what the user typed as a flag.
_FLAGS = {"on_invalid='skip'": "--on-invalid skip"}


def main(argv=None):
    """Runs the command line; returns the exit status.

    Every error ends here, so that the exception and its traceback are gone
    before the interpreter exits. An exception left to the top level stays
    alive (`sys.last_traceback`) until Python finalises, and with it the
    `tf.data` iterator of `fit`'s frames: its parallel map then waits, in a
    finalising interpreter, for `numpy_function` calls whose threads can no
    longer take the GIL, and the process hangs.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    format_warning = warnings.formatwarning
    warnings.formatwarning = functools.partial(_format_warning, args.command)
    try:
        status = _run_reporting_errors(args)
    finally:
        warnings.formatwarning = format_warning
    gc.collect()  # the pipelines held by cycles of the failed frames
    return status


def _run_reporting_errors(args):
    """`run(args)`'s status: 2 with one line for a user error (its
    traceback with --verbose), 1 with the traceback for anything else, 130
    on Ctrl+C."""
    try:
        return run(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"\nkeras-solov2 {args.command}: interrupted.", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if args.verbose:
            raise
        print(
            f"keras-solov2 {args.command}: error: {type(error).__name__}: "
            f"{_first_line(error)} (--verbose shows the traceback)",
            file=sys.stderr,
        )
        return 2
    except Exception:
        traceback.print_exc()
        return 1


def _first_line(error):
    """The first line of an error's message, in the flags the user typed."""
    message = first_line(error)
    for word, flag in _FLAGS.items():
        message = message.replace(word, flag)
    return message


def _format_warning(command, message, category, filename, lineno, line=None):
    """A warning as one line that names the command, in the user's flags."""
    return f"keras-solov2 {command}: warning: {_first_line(message)}\n"


if __name__ == "__main__":
    sys.exit(main())
