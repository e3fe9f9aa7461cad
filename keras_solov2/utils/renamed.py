"""Keywords renamed for one release: the old name still works and warns."""

import warnings


def renamed_keyword(value, old_value, name, old_name, where, stacklevel=3):
    """`value`, or `old_value` if it was given under the deprecated name.

    Args:
        value: what the caller passed as `name` (`None`: not given).
        old_value: what the caller passed as `old_name` (`None`: not given).
        name: str. The keyword's name now.
        old_name: str. Its deprecated name.
        where: str. The function, for the warning (`"keras_solov2.export.tflite"`).
        stacklevel: int. The warning's, counted from here: `3` is the caller
            of the function that calls this one.

    Raises:
        TypeError: both names given.
    """
    if old_value is None:
        return value
    if value is not None:
        raise TypeError(f"Pass `{name}` only; `{old_name}` is its deprecated name.")
    warnings.warn(
        f"`{old_name}=` of {where} is deprecated and will be removed in the next "
        f"release; pass `{name}=`.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return old_value
