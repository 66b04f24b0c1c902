"""Store URLs.

- ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``
- ``postgresql://user[:password]@host[:port]/database[?schema=saga&lease_seconds=10]``;
  the store's own query parameters are ``schema`` (1 to 63 bytes),
  ``lease_seconds`` (0.5 to 3600), ``claim_interval`` (0.05 to 3600 seconds) and
  ``pool_size`` (2 to 1000); other query parameters (``sslmode``...) go to the driver as
  they are.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable
from typing import Any

from saga._errors import StoreError
from saga._store._base import Store
from saga._validate import check_name

__all__ = ["open_store"]


def open_store(url: str, **options: Any) -> Store:
    """Build the store a URL names (not yet opened).

    Raises:
        TypeError: ``url`` is not a str.
        ValueError: a URL this version cannot parse.
        StoreError: a store kind this version does not provide.
    """
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"store URL {url!r} has no scheme; for a SQLite file, try 'sqlite:///{url}'"
        )
    if scheme == "sqlite":
        from saga._store._sqlite import SQLiteStore

        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"SQLite URL {url!r} must look like 'sqlite:///path/to/file.db'")
        path = rest[1:]
        if "?" in path:
            raise ValueError(f"SQLite URL {url!r}: query options are not supported")
        return SQLiteStore(None if path == ":memory:" else path, **options)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url, options)
    raise ValueError(f"unsupported store URL scheme {scheme!r} in {redact(url)!r}")


def _schema(text: str) -> str:
    try:
        check_name(text, "schema")  # not empty, no control characters, valid Unicode
    except ValueError:
        text = ""
    if not 0 < len(text.encode()) <= 63:
        raise ValueError("a PostgreSQL identifier: 1 to 63 bytes, no control characters")
    return text


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN and infinities too
            raise ValueError(f"a number of seconds from {low:g} to {high:g}")
        return value

    return convert


def _count(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return value

    return convert


# Query parameters of a PostgreSQL URL that are options of the store, not of the driver,
# with their conversion from text; a ValueError names what is expected.
_PG_OPTIONS: dict[str, Callable[[str], Any]] = {
    "schema": _schema,
    "lease_seconds": _seconds(0.5, 3600),
    "claim_interval": _seconds(0.05, 3600),
    "pool_size": _count(2, 1000),
}


def _postgres(url: str, options: dict[str, Any]) -> Store:
    try:
        from saga._store._postgres import PostgresStore
    except ImportError as error:  # pragma: no cover - asyncpg is a declared extra
        raise StoreError(
            f"the PostgreSQL store needs asyncpg: pip install 'saga[postgres]' ({error})"
        ) from error
    parts = urllib.parse.urlsplit(url)
    shown = redact(url)
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError(f"PostgreSQL URL {shown!r} names no host")
    if not parts.path.strip("/"):
        raise ValueError(f"PostgreSQL URL {shown!r} names no database")
    kept = []
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        convert = _PG_OPTIONS.get(key)
        if convert is None:
            kept.append((key, value))
            continue
        try:
            options[key] = convert(value)
        except ValueError as error:
            raise ValueError(
                f"PostgreSQL URL {shown!r}: bad {key}={value!r}; expected {error}"
            ) from None
    dsn = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept)))
    return PostgresStore(dsn, **options)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
