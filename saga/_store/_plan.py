"""What a group-commit batch writes, decided once for every backend.

A backend's transaction reads what the checks need up front (the sagas involved, the event
ids already seen and, on a shared store, which fences still hold a lease), then `plan_batch`
decides every operation in submission order and returns the rows to write, one list per
statement kind. The backend writes them and publishes the results after ``COMMIT``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import anyio

from saga._errors import LeaseLost, StoreError
from saga._store._base import Append, SagaRow, SendResult, row_params
from saga._store._vocabulary import (
    REQUEST_STATUS,
    SUSPENDED,
    TERMINAL_STATUSES,
    Access,
    InboxKind,
)
from saga._store._writer import GroupCommitWriter, Op

__all__ = [
    "INBOX_ROW_COLUMNS",
    "AppendOp",
    "BatchPlan",
    "BatchedWrites",
    "BatchedWritesHost",
    "InboxRow",
    "ParkOp",
    "SendOp",
    "StartOp",
    "plan_batch",
    "row_params",
]


class StartOp(Op[SagaRow | None]):
    __slots__ = ("fence", "records", "row")

    def __init__(self, row: SagaRow, records: list[tuple[int, bytes]], fence: int | None) -> None:
        super().__init__()
        self.row = row
        self.records = records
        self.fence = fence


class ParkOp(Op[None]):
    __slots__ = ("error", "fence", "release", "saga_id")

    def __init__(self, saga_id: str, error: bytes, release: bool, fence: int | None) -> None:
        super().__init__()
        self.saga_id = saga_id
        self.error = error
        self.release = release
        self.fence = fence


class SendOp(Op[SendResult]):
    __slots__ = ("event_id", "headers", "key", "kind", "name", "payload", "saga_id", "sent_at")

    def __init__(self, saga_id: str, event_id: str, kind: str, name: str, key: str | None,
                 payload: bytes, sent_at: float, headers: bytes | None) -> None:  # fmt: skip
        super().__init__()
        self.saga_id = saga_id
        self.event_id = event_id
        self.kind = kind
        self.name = name
        self.key = key
        self.payload = payload
        self.sent_at = sent_at
        self.headers = headers


class AppendOp(Op[bool]):
    __slots__ = ("append", "status")

    def __init__(self, append: Append, status: str | None) -> None:
        super().__init__()
        self.append = append
        self.status = status


class BatchedWritesHost(Protocol):
    """What `BatchedWrites` needs of the store it is mixed into: two attributes, which the
    store sets in its ``__init__``, and its transaction. mypy reports a store class that
    leaves one out where it is instantiated (the methods are abstract at run time too)."""

    access: str  # an `Access`: ``"client"`` only sends, ``"read"`` writes nothing
    _max_batch: int  # most operations one transaction takes

    @abc.abstractmethod
    async def _commit(self, batch: Sequence[Op[Any]]) -> None:
        """Decide and write ``batch`` in one transaction, then settle each operation."""

    @abc.abstractmethod
    async def _rollback(self) -> None:
        """Undo what a failed `_commit` left (nothing, if it rolls back on its own)."""


class BatchedWrites(BatchedWritesHost):
    """The `Store` writes of a backend whose transactions are `plan_batch`es queued on a
    `GroupCommitWriter` (``_writer``, set while open; see `BatchedWritesHost` for what the
    store provides)."""

    _writer: GroupCommitWriter | None = None
    _writing: contextlib.AsyncExitStack | None = None

    async def _start_writing(self) -> None:
        """Start the group-commit writer on a task of its own."""
        self._writer = GroupCommitWriter(self._commit, self._rollback, max_batch=self._max_batch)
        self._writing = contextlib.AsyncExitStack()
        tg = await self._writing.enter_async_context(anyio.create_task_group())
        tg.start_soon(self._writer.run)

    async def _stop_writing(self) -> None:
        """Commit what is queued, then stop the writer."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._writing is not None:
                await self._writing.aclose()
        finally:
            self._writing = self._writer = None

    def _submit_target(self, op: str = "send") -> GroupCommitWriter:
        if self.access == Access.READ or (self.access == Access.CLIENT and op != "send"):
            raise StoreError(
                f"this store was opened with access={self.access!r}: it cannot {op}; "
                "only a runtime that owns the store writes saga logs"
            )
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer

    def _fenced(self, append: Append) -> Append:
        """``append`` as it is to be checked (a shared store stamps a missing fence)."""
        return append

    def _start_fence(self, fence: int | None) -> int | None:
        """The fence a new saga is owned by (a shared store's own when none is given)."""
        return fence

    async def start(
        self, row: SagaRow, records: list[tuple[int, bytes]], *, fence: int | None = None
    ) -> SagaRow | None:
        op = StartOp(row, records, self._start_fence(fence))
        return await self._submit_target("start").submit(op)

    async def park(self, saga_id: str, error: bytes, *, release: bool, fence: int | None) -> None:
        await self._submit_target("append").submit(ParkOp(saga_id, error, release, fence))

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
        op = SendOp(saga_id, event_id, kind, name, key, payload, sent_at, headers)
        return await self._submit_target().submit(op)

    async def append(self, append: Append) -> None:
        await self._submit_target("append").submit(AppendOp(self._fenced(append), None))

    async def append_if(self, append: Append, *, status: str) -> bool:
        return await self._submit_target("append").submit(AppendOp(self._fenced(append), status))


class InboxRow(NamedTuple):
    """An inbox entry a batch writes, its columns in the order the backends insert them."""

    saga_id: str
    event_id: str
    kind: str
    name: str
    key: str | None
    payload: bytes
    sent_at: float
    headers: bytes | None
    origin: str


INBOX_ROW_COLUMNS = ", ".join(InboxRow._fields)


@dataclass(slots=True)
class BatchPlan:
    """The rows one batch writes, and each operation's result (an exception fails it).

    ``new_sagas`` are ``(row, owning fence)``; ``log_rows`` are ``(saga_id, seq, body,
    fence)``; ``owners`` are the new owning fence of sagas an `append_if` took over (a
    resume); ``notify`` are ``(owner fence, saga_id)`` of events and requests stored for a
    saga another store instance owns; ``announce`` are the sagas of requests every runtime
    is told of (those a runtime performs: `REQUEST_STATUS`, and an abort of a ``SUSPENDED``
    saga); ``parked`` are ``(saga_id, error, release)``.
    """

    new_sagas: list[tuple[SagaRow, int | None]] = field(default_factory=list)
    log_rows: list[tuple[str, int, bytes, int | None]] = field(default_factory=list)
    inbox_rows: list[InboxRow] = field(default_factory=list)
    index_rows: list[SagaRow] = field(default_factory=list)
    owners: list[tuple[str, int]] = field(default_factory=list)
    consumed: list[tuple[str, str]] = field(default_factory=list)
    closed: list[tuple[str, str]] = field(default_factory=list)
    notify: list[tuple[int, str]] = field(default_factory=list)
    announce: list[str] = field(default_factory=list)
    parked: list[tuple[str, bytes, bool]] = field(default_factory=list)
    results: list[tuple[Op[Any], Any]] = field(default_factory=list)


def checked_ids(batch: Sequence[Op[Any]], *, every_append: bool) -> list[str]:
    """Ids of the sagas whose rows the checks need, sorted (the order rows are locked in)."""
    ids = {op.row.saga_id for op in batch if isinstance(op, StartOp)}
    ids.update(op.saga_id for op in batch if isinstance(op, SendOp | ParkOp))
    ids.update(
        op.append.saga_id
        for op in batch
        if isinstance(op, AppendOp) and (every_append or op.status is not None)
    )
    return sorted(ids)


def plan_batch(
    batch: Sequence[Op[Any]],
    known: Mapping[str, SagaRow],
    seen_events: Collection[tuple[str, str]],
    origin: str,
    *,
    owners: Mapping[str, int | None] | None = None,
    live_fences: Collection[int] = (),
    fence: int | None = None,
) -> BatchPlan:
    """Decide every operation of ``batch`` in order.

    Args:
        known: the committed index rows of the sagas `checked_ids` names (the plan updates
            its own copy as the batch goes).
        seen_events: ``(saga_id, event_id)`` already in an inbox.
        origin: stamps the inbox entries this store instance writes.
        owners: on a shared store, each known saga's owning fence; every append must then
            carry a fence in ``live_fences`` that owns its saga (else `LeaseLost`) and
            continue the log exactly (else `StoreError`).
        fence: this store instance's fence (`send` tells whether it owns the saga).
            A new saga is owned by its start's fence, which must be in ``live_fences``
            (else `LeaseLost`).
    """
    plan = BatchPlan()
    known = dict(known)
    owners = None if owners is None else dict(owners)
    seen = set(seen_events)
    for op in batch:
        if isinstance(op, StartOp):
            existing = known.get(op.row.saga_id)
            if existing is not None:
                plan.results.append((op, existing))
                continue
            if owners is not None:
                if op.fence is None or op.fence not in live_fences:
                    # Another worker may have found this lease dead and moved on: a saga
                    # created under it now would belong to nobody.
                    error = LeaseLost(f"saga {op.row.saga_id!r}: this worker's lease has expired")
                    plan.results.append((op, error))
                    continue
                owners[op.row.saga_id] = op.fence
            known[op.row.saga_id] = op.row
            plan.new_sagas.append((op.row, op.fence))
            plan.log_rows.extend((op.row.saga_id, s, b, op.fence) for s, b in op.records)
            plan.results.append((op, None))
        elif isinstance(op, ParkOp):
            target = known.get(op.saga_id)
            mine = owners is None or (op.fence is not None and owners.get(op.saga_id) == op.fence)
            if target is not None and target.status not in TERMINAL_STATUSES and mine:
                plan.parked.append((op.saga_id, op.error, op.release and owners is not None))
                if op.release and owners is not None:
                    owners[op.saga_id] = None
            plan.results.append((op, None))
        elif isinstance(op, SendOp):
            plan.results.append((op, _send(op, known, seen, origin, owners, fence, plan)))
        else:
            assert isinstance(op, AppendOp)
            plan.results.append((op, _append(op, known, owners, live_fences, plan)))
    return plan


def _send(
    op: SendOp,
    known: Mapping[str, SagaRow],
    seen: set[tuple[str, str]],
    origin: str,
    owners: Mapping[str, int | None] | None,
    fence: int | None,
    plan: BatchPlan,
) -> SendResult:
    target = known.get(op.saga_id)
    if (op.saga_id, op.event_id) in seen:
        return SendResult.DUPLICATE
    if target is None:
        return SendResult.UNKNOWN
    required = REQUEST_STATUS.get(op.kind)
    if required is not None and target.status != required:
        return SendResult.REFUSED
    if required is None and target.status in TERMINAL_STATUSES:
        return SendResult.CLOSED
    seen.add((op.saga_id, op.event_id))
    plan.inbox_rows.append(InboxRow(op.saga_id, op.event_id, op.kind, op.name, op.key,
                                    op.payload, op.sent_at, op.headers, origin))  # fmt: skip
    if required is not None or (op.kind == InboxKind.ABORT and target.status == SUSPENDED):
        plan.announce.append(op.saga_id)  # a runtime performs it, whoever owned the saga
    owner = None if owners is None else owners.get(op.saga_id)
    if owners is None or (owner == fence and fence is not None):
        return SendResult.STORED
    if owner is not None:
        plan.notify.append((owner, op.saga_id))
    return SendResult.FORWARDED


def _append(
    op: AppendOp,
    known: dict[str, SagaRow],
    owners: dict[str, int | None] | None,
    live_fences: Collection[int],
    plan: BatchPlan,
) -> bool | Exception:
    append = op.append
    target = known.get(append.saga_id)
    first_seq = append.records[0][0]
    if op.status is not None and (
        target is None or target.status != op.status or target.seq + 1 != first_seq
    ):
        return False
    if owners is not None:
        if target is None:
            return StoreError(f"no saga {append.saga_id!r} to append to")
        if append.fence is None or append.fence not in live_fences:
            return LeaseLost(f"saga {append.saga_id!r}: this worker's lease has expired")
        if op.status is not None:  # a resume: the saga ended, whoever owned it let it go
            owners[append.saga_id] = append.fence
            plan.owners.append((append.saga_id, append.fence))
        elif owners.get(append.saga_id) != append.fence:
            return LeaseLost(f"saga {append.saga_id!r} is owned by another worker now")
        if target.seq + 1 != first_seq:
            return StoreError(
                f"saga {append.saga_id!r}: append at seq {first_seq} after seq {target.seq}"
            )
    if append.saga_id in known:
        known[append.saga_id] = append.row
    plan.log_rows.extend((append.saga_id, s, b, append.fence) for s, b in append.records)
    plan.index_rows.append(append.row)
    plan.consumed.extend((append.saga_id, event_id) for event_id in append.consumed)
    if append.closed is not None:
        plan.closed.append((append.closed, append.saga_id))
    return True
