"""Stores: where logs, the saga index, inboxes and deadlines live. See `Store`."""

from saga._store._base import (
    Append,
    InboxItem,
    InboxKind,
    SagaRow,
    SendResult,
    Store,
    StoreStats,
)
from saga._store._url import open_store

__all__ = [
    "Append",
    "InboxItem",
    "InboxKind",
    "SagaRow",
    "SendResult",
    "Store",
    "StoreStats",
    "open_store",
]
