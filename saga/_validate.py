"""Checks for what comes from outside: ids, names, free text, counts, seconds and options.

Every check raises `TypeError` for a value of the wrong type and `ValueError` for a value of
the right type that is out of range, before anything is queued for the store. Text that
reaches the store must be encodable as UTF-8 (no lone surrogates); ids and names also hold
no control characters (NUL included: PostgreSQL text cannot hold it).
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_NAME_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_SECONDS",
    "MAX_VERSION",
    "check_choice",
    "check_int",
    "check_limit",
    "check_name",
    "check_seconds",
    "check_text",
]

MAX_NAME_LENGTH = 255
MAX_LIMIT = 100_000  # most rows one list or dead_letters call returns
MAX_SECONDS = 100 * 365.25 * 86_400  # 100 years: the longest wait timeout or retry interval
MAX_ATTEMPTS = 1_000_000  # most attempts a RetryPolicy may give a handler
MAX_VERSION = 2**31 - 1  # a definition's version is a 32-bit integer in the stores
MAX_PAYLOAD_BYTES = 1 << 28  # 256 MiB: the largest max_payload_bytes a store can hold
MAX_BATCH = 100_000  # the largest max_batch

# float ** int raises OverflowError once the result passes the largest float.


def _number(value: float) -> str:
    """``value`` for a message: 3,155,760,000 (100 years), 0.5, inf."""
    if value == MAX_SECONDS:
        return f"{MAX_SECONDS:,.0f} (100 years)"
    if math.isfinite(value) and value == int(value):
        return f"{int(value):,}"
    return f"{value:g}"


def _utf8(value: str, what: str) -> None:
    """Raise `ValueError` if ``value`` cannot be encoded as UTF-8 (a lone surrogate)."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        char = value[error.start]
        raise ValueError(
            f"{what} must be valid Unicode text: it holds a lone surrogate "
            f"(U+{ord(char):04X}) at position {error.start}"
        ) from None


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a usable id or name.

    Raises:
        TypeError: not a str.
        ValueError: empty, longer than `MAX_NAME_LENGTH`, holding control characters
            (NUL included), or not encodable as UTF-8 (a lone surrogate).
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} must not contain control characters: {value!r}")
    _utf8(value, what)
    return value


def check_text(value: object, what: str) -> str:
    """Return ``value`` if it is usable free text (a reason): any length, newlines allowed.

    Raises:
        TypeError: not a str.
        ValueError: holding NUL, or not encodable as UTF-8 (a lone surrogate).
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    _utf8(value, what)
    return value


def check_int(value: object, what: str, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) from ``low`` to ``high``.

    Raises:
        TypeError: not an int, or a bool.
        ValueError: below ``low`` or above ``high``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"from {low:,} to {high:,}" if high is not None else f">= {low:,}"
        shown = value if -(10**30) < value < 10**30 else f"an int of {len(str(abs(value)))} digits"
        raise ValueError(f"{what} must be {bound}, got {shown}")
    return value


def check_limit(value: object, what: str = "limit") -> int:
    """Return ``value`` if it is a row limit from 1 to `MAX_LIMIT` (see `check_int`)."""
    return check_int(value, what, 1, MAX_LIMIT)


def check_seconds(
    value: object,
    what: str,
    *,
    low: float = 0.0,
    high: float = MAX_SECONDS,
    positive: bool = False,
) -> float:
    """Return ``value`` as float seconds if it is a number (not a bool) in range.

    The range is ``low <= value <= high`` (``low < value`` if ``positive``); ``high`` may be
    ``math.inf`` to accept an infinite value. NaN is never accepted.

    Raises:
        TypeError: not an int or a float, or a bool.
        ValueError: NaN, or out of range.
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    # An int is compared as it is: float() of a huge one would overflow.
    below = value <= low if positive else value < low
    if (isinstance(value, float) and math.isnan(value)) or below or value > high:
        lower = f"more than {_number(low)}" if positive else f"from {_number(low)}"
        upper = "" if high == math.inf else f" up to {_number(high)}"
        shown = (
            repr(value) if -(10**30) < value < 10**30 or isinstance(value, float) else "a huge int"
        )
        raise ValueError(f"{what} must be a number of seconds {lower}{upper}, got {shown}")
    try:
        return float(value)
    except OverflowError:  # an int past the largest float, where infinity is allowed
        return math.inf


def check_choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of the strings ``choices``.

    Raises:
        TypeError: not a str.
        ValueError: not one of ``choices``.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
