"""Stores: where logs, the saga index, inboxes and deadlines live. See `Store`."""

from saga._store._base import (
    Append,
    InboxItem,
    SagaRow,
    SendResult,
    Store,
)
from saga._store._url import open_store

__all__ = ["Append", "InboxItem", "SagaRow", "SendResult", "Store", "open_store"]
