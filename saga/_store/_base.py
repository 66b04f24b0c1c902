"""The store interface every backend implements, and the rows it trades in.

The store knows nothing of steps or folds: it keeps encoded records, a derived saga index
updated in the same transaction, a durable inbox per saga and the dead letters. Writes are
batched by the backend (group commit); each method returns only after its commit.
"""

from __future__ import annotations

import abc
import enum
import math
import operator
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any, Protocol

import anyio
import msgspec

from saga._store._vocabulary import InboxKind

__all__ = [
    "Append",
    "DeadLetterRow",
    "InboxItem",
    "InboxKind",
    "Row",
    "SagaRow",
    "SendResult",
    "Store",
    "StoreStats",
]


class SagaRow(msgspec.Struct):
    """One row of the saga index: a cache of the fold, rebuildable from the log."""

    saga_id: str
    name: str
    version: int
    status: str
    step: str | None
    created_at: float
    updated_at: float
    seq: int
    wake_at: float | None
    state: bytes
    error: bytes | None = None
    annotations: bytes | None = None
    parked: bytes | None = None  # why a runtime could not run it (an `ErrorInfo`); not folded


class Row(Protocol):
    """A row as a backend reads it, by column name (a `sqlite3.Row`, an asyncpg ``Record``)."""

    def __getitem__(self, column: str, /) -> Any: ...


def by_name(struct: type[msgspec.Struct]) -> Callable[[Row], tuple[Any, ...]]:
    """A function reading the columns named like ``struct``'s fields from a `Row`, in
    field order (one C call: `operator.itemgetter`)."""
    getter: Callable[[Row], tuple[Any, ...]] = operator.itemgetter(*struct.__struct_fields__)
    return getter


ROW_COLUMNS = ", ".join(SagaRow.__struct_fields__)  # the columns `saga_row` reads
ROW_MARKS = ",".join("?" * len(SagaRow.__struct_fields__))  # a row's SQLite placeholders
# What a store written before sagas had a ``parked`` column reads instead of `ROW_COLUMNS`.
ROW_COLUMNS_UNPARKED = ROW_COLUMNS.replace("parked", "NULL AS parked")
saga_row_values = by_name(SagaRow)


def saga_row(row: Row) -> SagaRow:
    """The `SagaRow` of a row that has the `ROW_COLUMNS` (other columns are ignored)."""
    return SagaRow(*saga_row_values(row))


def row_params(row: SagaRow) -> tuple[Any, ...]:
    """The row's values in `ROW_COLUMNS` order."""
    return msgspec.structs.astuple(row)


class InboxItem(msgspec.Struct, frozen=True):
    """A pending entry of a saga's inbox: an event or an operator request (see `InboxKind`).

    ``id`` grows with every entry written to the store, in commit order.
    """

    id: int
    saga_id: str
    event_id: str
    kind: str
    name: str
    key: str | None
    payload: bytes
    sent_at: float
    headers: bytes | None = None


INBOX_COLUMNS = ", ".join(InboxItem.__struct_fields__)  # the columns `inbox_item` reads
inbox_item_values = by_name(InboxItem)


def inbox_item(row: Row) -> InboxItem:
    """The `InboxItem` of a row that has the `INBOX_COLUMNS` (other columns are ignored)."""
    return InboxItem(*inbox_item_values(row))


class DeadLetterRow(msgspec.Struct, frozen=True):
    """An event no step consumed before its saga ended."""

    saga_id: str
    event_id: str
    name: str
    key: str | None
    payload: bytes
    sent_at: float
    reason: str


DEAD_LETTER_COLUMNS = ", ".join(DeadLetterRow.__struct_fields__)  # what `dead_letter` reads
dead_letter_values = by_name(DeadLetterRow)


def dead_letter(row: Row) -> DeadLetterRow:
    """The `DeadLetterRow` of a row that has the `DEAD_LETTER_COLUMNS`."""
    return DeadLetterRow(*dead_letter_values(row))


class SendResult(enum.Enum):
    """What `Store.send` did."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"
    FORWARDED = "forwarded"  # stored; another runtime owns the saga and was told (shared stores)
    CLOSED = "closed"  # an event or abort for a terminal saga
    REFUSED = "refused"  # a runtime request for a saga not in its status (`REQUEST_STATUS`)


class StoreStats(msgspec.Struct, frozen=True):
    """What `Store.stats` counts.

    Attributes:
        counts: ``(name, status, number of sagas)`` for every pair that has any.
        oldest_waiting: the ``WAITING`` saga whose wait began first, if any.
    """

    counts: list[tuple[str, str, int]]
    oldest_waiting: SagaRow | None


class Append(msgspec.Struct):
    """Records an actor appends to its own saga's log, with everything that goes with them.

    Attributes:
        saga_id: the saga.
        records: ``(seq, encoded record)`` pairs, consecutive after the saga's last seq.
        row: the saga index row after the last record.
        consumed: inbox ``event_id``s taken by these records (delivered events, aborts).
        closed: if set, the saga ended: pending events become dead letters with this reason.
        fence: on a shared store, the fencing token of the lease under which the writer
            owns the saga; the append fails with `LeaseLost` unless that lease still holds
            and still owns the saga. ``None`` on a single-owner store.
    """

    saga_id: str
    records: list[tuple[int, bytes]]
    row: SagaRow
    consumed: list[str] = []
    closed: str | None = None
    fence: int | None = None


CLAIM_BATCH = 1000  # most sagas one `Store.claim_orphans` call takes over


class Store(abc.ABC):
    """A saga store. Writes commit before they return; reads see committed data only.

    A *shared* store (``shared = True``, PostgreSQL) has many runtimes writing at once:
    each owns some sagas under a lease with a fencing token (``fence``), renewed by
    `keep_lease`, and takes over the sagas of dead runtimes with `claim_orphans`. A
    single-owner store (SQLite) keeps the defaults below.
    """

    shared: bool = False
    fence: int | None = None
    renew_interval: float = math.inf  # seconds between two `keep_lease` calls
    claim_interval: float = math.inf  # seconds between two `claim_orphans` calls

    async def keep_lease(self) -> bool:
        """Renew this runtime's lease; ``False`` if it had expired (a new fence now)."""
        return True

    async def claim_orphans(
        self,
        runnable: Collection[tuple[str, int]],
        *,
        exclude: Collection[str] = (),
        limit: int = CLAIM_BATCH,
        sweep: bool = False,
    ) -> list[str]:
        """Take over up to ``limit`` open sagas nobody runs; their ids.

        Those are the sagas of runtimes whose lease expired and those handed back
        (`park` with ``release``), of the definitions ``runnable`` names (``(name,
        version)``), except the ids in ``exclude``: a runtime owns only what it can run.
        ``sweep`` also looks for sagas whose owner is no registered runtime at all.
        """
        return []

    @abc.abstractmethod
    async def park(self, saga_id: str, error: bytes, *, release: bool, fence: int | None) -> None:
        """Record why a runtime could not run the saga (shown by every reader until the
        saga moves again). ``release`` hands the saga back for a runtime that can run it
        (shared stores; only if ``fence`` still owns it). Best effort: never raises
        `LeaseLost`, and does nothing to a saga another runtime owns."""

    async def wait_for_foreign(self, timeout: float) -> None:
        """Wait until another process may have written to this runtime's inbox (at most
        ``timeout`` seconds; a store that cannot tell just sleeps)."""
        await anyio.sleep(timeout)

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create or check the schema. Raises `StoreError` / `NotASagaStore`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    # -- writes -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(
        self, row: SagaRow, records: list[tuple[int, bytes]], *, fence: int | None = None
    ) -> SagaRow | None:
        """Create a saga with its first records (``(seq, body)`` from seq 1), atomically.

        On a shared store the saga is owned by ``fence``, which must hold a live lease in
        the same transaction (else `LeaseLost`, and nothing is written): a saga is never
        created under a lease that another runtime may already have given up for dead.

        Returns ``None``, or the existing row (and writes nothing) if the id is taken.
        """

    @abc.abstractmethod
    async def send(
        self,
        saga_id: str,
        event_id: str,
        *,
        kind: str,
        name: str,
        key: str | None,
        payload: bytes,
        sent_at: float,
        headers: bytes | None = None,
    ) -> SendResult:
        """Add to a saga's inbox, unless this ``event_id`` is already there (checked first).

        An event or an abort needs the saga not terminal (else ``CLOSED``); a request a
        runtime performs needs the one status it applies to (`REQUEST_STATUS`: a resume
        ``FAILED``, a retry or skip ``SUSPENDED``, a revert ``COMPLETED``; else
        ``REFUSED``). The check and the insert are one transaction.
        """

    @abc.abstractmethod
    async def append(self, append: Append) -> None:
        """Append an actor's records atomically with their index row and inbox changes."""

    @abc.abstractmethod
    async def append_if(self, append: Append, *, status: str) -> bool:
        """`append`, only if the saga's status is ``status`` and its seq precedes the records."""

    # -- reads --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def saga(self, saga_id: str) -> SagaRow | None:
        """The saga's index row."""

    @abc.abstractmethod
    async def sagas(self, *, status: str | None, name: str | None, limit: int) -> list[SagaRow]:
        """Index rows, newest first."""

    @abc.abstractmethod
    async def log(self, saga_id: str) -> list[bytes]:
        """The saga's encoded records, in seq order."""

    @abc.abstractmethod
    def active_logs(self) -> AsyncIterator[tuple[str, list[bytes]]]:
        """Each non-terminal saga's id and log (recovery never reads finished sagas)."""

    @abc.abstractmethod
    async def inbox(self, saga_id: str) -> list[InboxItem]:
        """The saga's pending inbox, oldest first."""

    @abc.abstractmethod
    async def pending_inbox(self, kind: str) -> list[InboxItem]:
        """Every saga's pending inbox entries of one ``kind``, oldest first."""

    @abc.abstractmethod
    async def inbox_mark(self) -> int:
        """A position in the inbox: entries committed after this call have a greater ``id``."""

    @abc.abstractmethod
    async def foreign_inbox(self, after: int) -> tuple[list[InboxItem], int]:
        """Pending entries after the mark ``after`` that another store instance wrote.

        This is how a runtime learns of requests and events from other processes (the
        ``saga`` command line) on the same store.

        Returns:
            The entries, oldest first, and the mark to pass next time (past this instance's
            own entries too, so they are never read again).
        """

    @abc.abstractmethod
    async def stats(self) -> StoreStats:
        """Saga counts by name and status, and the saga waiting longest."""

    @abc.abstractmethod
    async def due(self, until: float) -> list[tuple[str, float]]:
        """``(saga_id, wake_at)`` of non-terminal sagas with a deadline at or before ``until``."""

    @abc.abstractmethod
    async def dead_letters(self, saga_id: str | None, limit: int) -> list[DeadLetterRow]:
        """Dead letters, newest first, of one saga or all."""
