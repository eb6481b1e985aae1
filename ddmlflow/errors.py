"""One exception for bad user input, so every front end reports it the same way.

The CLI and the entry points turn an ``InputError`` into one line on stderr and
exit code 2; the pyfunc turns it into an ``MlflowException`` (HTTP 400).
"""

from __future__ import annotations


class InputError(ValueError):
    """A parameter has a value we cannot use. ``str()`` names both and what is allowed."""

    def __init__(self, param: str, value: object, allowed: str):
        self.param, self.value, self.allowed = param, value, allowed
        super().__init__(f"{param}={value!r}: {allowed}")


def require(ok: bool, param: str, value: object, allowed: str) -> None:
    """Raise ``InputError`` unless ``ok``."""
    if not ok:
        raise InputError(param, value, allowed)
