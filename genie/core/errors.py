"""User-facing errors: one sentence that says what is wrong and names the fix.

The CLI and play.py catch `GenieError` and print its message (no traceback). Each concrete class also
derives from the matching builtin so callers can catch `ValueError`, `FileNotFoundError`, `TypeError`.
"""


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
