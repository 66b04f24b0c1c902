"""Store URLs.

- ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``
- ``postgresql://user[:password]@host[:port]/database[?schema=saga&lease_seconds=10]``;
  other query parameters (``sslmode``...) go to the driver as they are.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from saga._errors import StoreError
from saga._store._base import Store

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


# Query parameters of a PostgreSQL URL that are options of the store, not of the driver.
_PG_OPTIONS = {"schema": str, "lease_seconds": float, "claim_interval": float, "pool_size": int}


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
        except ValueError:
            raise ValueError(f"PostgreSQL URL {shown!r}: bad {key}={value!r}") from None
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
