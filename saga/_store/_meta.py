"""What every store keeps in its ``saga_meta`` table: a marker and the schema version."""

from __future__ import annotations

from saga._errors import NotASagaStore, StoreError

__all__ = ["MARKER", "schema_version"]

MARKER = "saga-store"


def schema_version(meta: dict[str, str], where: str, supported: int) -> int:
    """The schema version ``saga_meta`` holds, checked against what this saga reads.

    Args:
        meta: the table's key/value pairs.
        where: the store, for messages (a quoted path, a URL without its password).
        supported: the newest version this saga understands.

    Raises:
        NotASagaStore: no marker, or no usable version.
        StoreError: a version newer than ``supported``.
    """
    if meta.get("format") != MARKER:
        raise NotASagaStore(f"{where} is not a saga store")
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        raise NotASagaStore(f"{where} has an unreadable schema version") from None
    if version > supported:
        raise StoreError(
            f"{where} has schema version {version}; this saga understands up to "
            f"{supported}: upgrade saga"
        )
    if version < 1:
        raise NotASagaStore(f"{where} has no usable schema version")
    return version
