"""`StateChangeRecorder`: one `StateChange` per transition that changes a saga's status or state.

The status a transition leaves is known from the record's kind (and, in one case, the
record before it in the same commit), so nothing is kept per saga while it waits: a saga
whose next record is written days later, in another process, still gets the right
``from_status``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec

from observers._sinks import JsonLinesSink
from saga import (
    AbortRequested,
    CompensationStarted,
    EventDelivered,
    Observer,
    Record,
    RecordBody,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaInfo,
    SagaResumed,
    SagaRetried,
    SagaReverted,
    SagaStarted,
    SagaSuspended,
    Status,
    StepCompleted,
    StepContext,
    StepFailed,
    StepSkipped,
    StepWaiting,
    WaitTimedOut,
)

__all__ = ["StateChange", "StateChangeRecorder", "StateChangeSink"]

_plain_encoder = msgspec.msgpack.Encoder()


class StateChange(msgspec.Struct, frozen=True):
    """A transition that changed a saga's status or its state.

    Attributes:
        saga_id: the saga.
        seq: the ``seq`` of the record that made the change.
        at: the record's time, epoch seconds.
        step: the record's step, or ``None`` for saga-level records.
        from_status: the status before the record (``None`` for ``saga_started``).
        to_status: the status after it.
        state: the saga state after it (an instance of the definition's state type).
        kind: the record's kind (``step_completed``, ``saga_compensated``, ...).
        name: the saga's definition name.
    """

    saga_id: str
    seq: int
    at: float
    step: str | None
    from_status: Status | None
    to_status: Status
    state: Any
    kind: str = ""
    name: str = ""


StateChangeSink: TypeAlias = (
    Callable[[StateChange], None] | Callable[[StateChange], Awaitable[None]] | JsonLinesSink
)
"""Where a `StateChangeRecorder` sends its records: a sync or async callable."""


@dataclass(slots=True)
class _Before:
    ctx: StepContext[Any]
    state: Any  # the state the handler was given, as plain values


class StateChangeRecorder(Observer):
    """Sends a `StateChange` to ``sink`` for every transition that changes status or state.

    A handler that returns without touching the state changes nothing; a step record
    that moves the saga to another status (``WAITING``, say) is recorded either way. The
    sink is awaited in the saga's actor, so a slow sink slows its saga; an error in it is
    logged and counted by the runtime and never changes the saga's course.

    Args:
        sink: a callable taking a `StateChange`, sync or async, e.g. a `JsonLinesSink`.

    Raises:
        TypeError: ``sink`` is not callable.
    """

    def __init__(self, sink: StateChangeSink) -> None:
        if not callable(sink):
            raise TypeError(f"sink must be callable, got {sink!r}")
        self._sink = sink
        self._before: dict[str, _Before] = {}  # saga id -> the running handler's input state
        self._aborted_wait: set[str] = set()  # sagas whose wait an abort just ended
        self._suspended: set[str] = set()  # sagas seen suspended (an abort ends that)

    async def before_step(self, ctx: StepContext[Any]) -> None:
        """Remember the state the handler starts from, to tell whether it changed it."""
        plain = msgspec.msgpack.decode(_plain_encoder.encode(ctx.state))
        self._before[ctx.saga_id] = _Before(ctx, plain)

    async def on_transition(self, record: Record, info: SagaInfo) -> None:
        """Send a `StateChange` if this record changed the saga's status or state."""
        body = record.body
        before = self._from_status(body, info)
        changed = isinstance(body, SagaStarted) or before != info.status
        if isinstance(body, StepCompleted | StepWaiting):  # they carry the saved state
            started = self._before.pop(info.saga_id, None)
            if started is None or started.ctx.step != record.step or started.state != body.state:
                changed = True
        elif isinstance(body, StepFailed):
            self._before.pop(info.saga_id, None)  # the handler's changes were discarded
        if info.status.terminal:
            self._before.pop(info.saga_id, None)
            self._aborted_wait.discard(info.saga_id)
            self._suspended.discard(info.saga_id)
        if not changed:
            return
        change = StateChange(
            saga_id=info.saga_id,
            seq=record.seq,
            at=record.at,
            step=record.step,
            from_status=before,
            to_status=info.status,
            state=info.state,
            kind=record.kind,
            name=info.name,
        )
        result = self._sink(change)
        if inspect.isawaitable(result):
            await result

    def _from_status(self, body: RecordBody, info: SagaInfo) -> Status | None:
        """The status before the record: its kind alone fixes it, but for an abort's."""
        match body:
            case SagaStarted():
                return None
            case SagaCompleted():
                return Status.RUNNING
            case SagaCompensated() | SagaFailed():
                return Status.COMPENSATING
            case SagaResumed():
                return Status.FAILED
            case SagaSuspended():
                self._suspended.add(info.saga_id)
                return Status.RUNNING
            case SagaRetried():
                self._suspended.discard(info.saga_id)
                return Status.SUSPENDED
            case StepSkipped() if body.by is not None:  # an operator's skip
                self._suspended.discard(info.saga_id)
                return Status.SUSPENDED
            case SagaReverted():
                return Status.COMPLETED
            case StepWaiting():
                return Status.COMPENSATING if body.compensating else Status.RUNNING
            case EventDelivered() | WaitTimedOut():
                return Status.COMPENSATING if body.compensating else Status.WAITING
            case AbortRequested():
                # The abort leaves the status alone; compensation_started, next in the same
                # commit, moves it on: from WAITING if the abort ended a wait.
                if body.effective and info.status is Status.WAITING:
                    self._aborted_wait.add(info.saga_id)
                if body.effective and info.saga_id in self._suspended:
                    self._suspended.discard(info.saga_id)  # the abort ended a suspension
                    return Status.SUSPENDED
                return info.status
            case CompensationStarted():
                if not body.failed_step and body.error and body.error.type == "Reverted":
                    return Status.COMPENSATING  # saga_reverted moved it already
                if info.saga_id in self._aborted_wait:
                    self._aborted_wait.discard(info.saga_id)
                    return Status.WAITING
                return Status.RUNNING
        # step_started, step_completed, step_failed and kinds added later keep the status.
        return info.status
