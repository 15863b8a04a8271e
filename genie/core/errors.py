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
