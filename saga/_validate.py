"""Checks for identifiers that come from outside: saga ids, names, keys, event ids."""

from __future__ import annotations

__all__ = ["MAX_NAME_LENGTH", "check_name"]

MAX_NAME_LENGTH = 255


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a usable id or name.

    Raises:
        TypeError: not a str.
        ValueError: empty, longer than `MAX_NAME_LENGTH`, or holding control characters.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} must not contain control characters: {value!r}")
    return value
