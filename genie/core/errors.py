"""User-facing errors: one sentence that says what is wrong and names the fix.

The CLI and play.py catch `GenieError` and print its message (no traceback). Each concrete class also
derives from the matching builtin so callers can catch `ValueError`, `FileNotFoundError`, `TypeError`.
"""

import math
import numbers


class GenieError(Exception):
    """Base class of every error a user can cause."""


class GenieValueError(GenieError, ValueError):
    pass


class GenieFileNotFoundError(GenieError, FileNotFoundError):
    pass


class GenieTypeError(GenieError, TypeError):
    pass


class GenieCorruptFileError(GenieValueError):
    """A file genie wrote is truncated, altered or unreadable (its checksum or format says so)."""


class GenieDiskFullError(GenieError, OSError):
    """The disk filled up during a write; what was committed before it is intact."""


class GenieLockedError(GenieError):
    """Another process is writing to the same output folder."""


def positive_int(value, name: str) -> int:
    """`value` as an int when it is an integer >= 1 (not a bool, not 2.7), else one GenieValueError."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < 1:
        raise GenieValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def in_range(value, name: str, low, high=None, integer: bool = True, above: bool = False, fix: str = ""):
    """`value` when it is a number in [low, high] (> low with `above`; an integer with `integer`; never a
    bool), else one GenieValueError naming `name`, the range and `fix` (default: pass a value in it)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral if integer else numbers.Real)
    ok = ok and (isinstance(value, numbers.Integral) or math.isfinite(value))  # not NaN, not infinite
    ok = ok and (value > low if above else value >= low) and (high is None or value <= high)
    if not ok:
        span = f"in [{low}, {high}]" if high is not None else f"{'>' if above else '>='} {low}"
        kind = "an integer" if integer else "a number"
        raise GenieValueError(
            f"{name} must be {kind} {span}, got {value!r}: {fix or 'pass a value in that range'}."
        )
    return value
