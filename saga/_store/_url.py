"""Store URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``."""

from __future__ import annotations

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
        raise StoreError("the PostgreSQL store is not available in this version of saga")
    raise ValueError(f"unsupported store URL scheme {scheme!r} in {url!r}")
