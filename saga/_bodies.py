"""The log's vocabulary: the kinds of record, and one typed body per kind.

A record's ``data`` (`saga._records.Record`) holds its body's fields as plain values,
under the body's field names: those names are format 1, and a body's `RecordBody.data`
writes exactly them. A new field gets a default (an older record lacks it); a field is
never renamed or retyped.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import msgspec

from saga._events import Event, Wait
from saga._info import ErrorInfo

__all__ = [
    "BODIES",
    "AbortRequested",
    "CompensationStarted",
    "EventDelivered",
    "RecordBody",
    "RecordKind",
    "SagaCompensated",
    "SagaCompleted",
    "SagaFailed",
    "SagaResumed",
    "SagaRetried",
    "SagaReverted",
    "SagaStarted",
    "SagaSuspended",
    "StepBody",
    "StepCompleted",
    "StepFailed",
    "StepSkipped",
    "StepStarted",
    "StepWaiting",
    "WaitTimedOut",
]


class RecordKind(enum.StrEnum):
    """What a record says happened. `Record.kind` holds the value, a plain str."""

    SAGA_STARTED = "saga_started"
    STEP_STARTED = "step_started"
    STEP_WAITING = "step_waiting"
    EVENT_DELIVERED = "event_delivered"
    WAIT_TIMED_OUT = "wait_timed_out"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_SKIPPED = "step_skipped"
    ABORT_REQUESTED = "abort_requested"
    COMPENSATION_STARTED = "compensation_started"
    SAGA_COMPLETED = "saga_completed"
    SAGA_COMPENSATED = "saga_compensated"
    SAGA_FAILED = "saga_failed"
    SAGA_RESUMED = "saga_resumed"
    SAGA_SUSPENDED = "saga_suspended"
    SAGA_RETRIED = "saga_retried"
    SAGA_REVERTED = "saga_reverted"


# gc=False: a body holds plain values, never anything that refers back to it, so it cannot
# be part of a reference cycle; recovery decodes one per record, and untracked they cost
# the collector nothing.
class RecordBody(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The typed body of a record (`Record.body`); one subclass per `RecordKind`.

    ``kind`` is the kind's string. A field with a default may be missing from an old
    record's ``data``.
    """

    kind: ClassVar[str]

    def data(self) -> dict[str, Any]:
        """The body as `Record.data`: plain values under the keys of format 1."""
        raise NotImplementedError


class StepBody(RecordBody, frozen=True, kw_only=True):
    """The body of a record about a step's handler.

    Attributes:
        compensating: whether the handler undoes the step (``compensate``,
            ``on_compensation_event``, or ``on_timeout`` of a compensation's wait).
    """

    compensating: bool = False


class SagaStarted(RecordBody, frozen=True, kw_only=True):
    """``saga_started``: the first record of every log.

    Attributes:
        saga_id: the saga.
        name: its definition's name.
        version: its definition's version.
        steps: the definition's step names, in order.
        state: the initial state, as plain values.
        annotations: what observers recorded at the start (e.g. the trace context).
    """

    kind: ClassVar[str] = RecordKind.SAGA_STARTED.value
    saga_id: str
    name: str
    version: int
    steps: list[str]
    state: Any
    annotations: dict[str, str] = {}

    def data(self) -> dict[str, Any]:
        data = {
            "saga_id": self.saga_id,
            "name": self.name,
            "version": self.version,
            "steps": self.steps,
            "state": self.state,
        }
        if self.annotations:
            data["annotations"] = self.annotations
        return data


class StepStarted(StepBody, frozen=True, kw_only=True):
    """``step_started``: a handler is about to run (durable before it does).

    Attributes:
        handler: ``run``, ``on_event``, ``on_timeout``, ``compensate`` or
            ``on_compensation_event``.
        attempt: 1-based attempt of this handler.
        recovery: how many runs of it in a row a crash interrupted (0 for a first run).
    """

    kind: ClassVar[str] = RecordKind.STEP_STARTED.value
    handler: str
    attempt: int
    recovery: int = 0

    def data(self) -> dict[str, Any]:
        return {
            "compensating": self.compensating,
            "handler": self.handler,
            "attempt": self.attempt,
            "recovery": self.recovery,
        }


class StepWaiting(StepBody, frozen=True, kw_only=True):
    """``step_waiting``: a handler returned a `Wait`; its state is saved.

    Attributes:
        event: the event name waited for.
        key: the key it must carry, if any.
        timeout: the wait's timeout in seconds, if any.
        deadline: when it times out, epoch seconds, if it does.
        state: the state the handler saved, as plain values.
    """

    kind: ClassVar[str] = RecordKind.STEP_WAITING.value
    event: str
    key: str | None = None
    timeout: float | None = None
    deadline: float | None = None
    state: Any

    @property
    def wait(self) -> Wait:
        """The `Wait` the handler returned."""
        return Wait(name=self.event, key=self.key, timeout=self.timeout)

    def data(self) -> dict[str, Any]:
        return {
            "compensating": self.compensating,
            "event": self.event,
            "key": self.key,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "state": self.state,
        }


class EventDelivered(StepBody, frozen=True, kw_only=True):
    """``event_delivered``: an event from the inbox ends the wait (consumed in its commit).

    Attributes:
        event: the `Event`, as the next handler receives it.
    """

    kind: ClassVar[str] = RecordKind.EVENT_DELIVERED.value
    event: Event

    def data(self) -> dict[str, Any]:
        e = self.event
        event = {"event_id": e.event_id, "name": e.name, "key": e.key, "payload": e.payload}
        if e.headers:
            event["headers"] = e.headers
        return {"compensating": self.compensating, "event": event}


class WaitTimedOut(StepBody, frozen=True, kw_only=True):
    """``wait_timed_out``: the wait's deadline passed first; ``on_timeout`` runs next."""

    kind: ClassVar[str] = RecordKind.WAIT_TIMED_OUT.value

    def data(self) -> dict[str, Any]:
        return {"compensating": self.compensating}


class StepCompleted(StepBody, frozen=True, kw_only=True):
    """``step_completed``: a handler returned ``None``; its state is saved.

    Attributes:
        state: the state the handler saved, as plain values.
    """

    kind: ClassVar[str] = RecordKind.STEP_COMPLETED.value
    state: Any

    def data(self) -> dict[str, Any]:
        return {"compensating": self.compensating, "state": self.state}


class StepSkipped(StepBody, frozen=True, kw_only=True):
    """``step_skipped``: the step's turn came and it will not run (its ``should_run`` said
    no), or an operator skipped a ``SUSPENDED`` saga's failed step; it is never
    compensated.

    Attributes:
        reason: why.
        by: who decided, when a person did (an operator's skip); ``None`` for
            ``should_run``.
    """

    kind: ClassVar[str] = RecordKind.STEP_SKIPPED.value
    reason: str
    by: str | None = None

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"compensating": self.compensating, "reason": self.reason}
        if self.by is not None:
            data["by"] = self.by
        return data


class StepFailed(StepBody, frozen=True, kw_only=True):
    """``step_failed``: a handler raised (or was interrupted too often); its changes are lost.

    Attributes:
        handler: the handler that failed.
        attempt: its attempt.
        error: the exception's type name and message (``step`` is the record's).
        retry_at: when the handler runs again, epoch seconds; ``None`` if it does not.
        final: no attempt follows: the step failed for good.
    """

    kind: ClassVar[str] = RecordKind.STEP_FAILED.value
    handler: str
    attempt: int
    error: ErrorInfo
    retry_at: float | None = None
    final: bool = False

    def data(self) -> dict[str, Any]:
        error = {"type": self.error.type, "message": self.error.message}
        return {
            "compensating": self.compensating,
            "handler": self.handler,
            "attempt": self.attempt,
            "error": error,
            "retry_at": self.retry_at,
            "final": self.final,
        }


class AbortRequested(RecordBody, frozen=True, kw_only=True):
    """``abort_requested``: an operator asked to stop the saga (consumed in its commit).

    Attributes:
        reason: why.
        by: who asked, if known.
        effective: whether it stops the saga; ``False`` if it came too late to matter.
    """

    kind: ClassVar[str] = RecordKind.ABORT_REQUESTED.value
    reason: str
    by: str | None = None
    effective: bool = False

    def data(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by, "effective": self.effective}


class CompensationStarted(RecordBody, frozen=True, kw_only=True):
    """``compensation_started``: the saga turns back, after a failure or an abort.

    Attributes:
        error: why (the step's error, or ``Aborted`` with the reason).
        failed_step: the step that failed or was aborted, if any.
        steps: the compensations to run, in order.
    """

    kind: ClassVar[str] = RecordKind.COMPENSATION_STARTED.value
    error: ErrorInfo | None = None
    failed_step: str | None = None
    steps: list[str]

    def data(self) -> dict[str, Any]:
        return {
            "error": _error_data(self.error),
            "failed_step": self.failed_step,
            "steps": self.steps,
        }


class _Ended(RecordBody, frozen=True, kw_only=True):
    """A terminal record with nothing to say but the dead letters it leaves.

    Attributes:
        dead_letters: how many pending events this record left as dead letters.
    """

    dead_letters: int = 0

    def data(self) -> dict[str, Any]:
        return {"dead_letters": self.dead_letters} if self.dead_letters else {}


class SagaCompleted(_Ended, frozen=True, kw_only=True):
    """``saga_completed``: every step completed (``dead_letters`` as for every end)."""

    kind: ClassVar[str] = RecordKind.SAGA_COMPLETED.value


class SagaCompensated(_Ended, frozen=True, kw_only=True):
    """``saga_compensated``: every compensation ran (``dead_letters`` as for every end)."""

    kind: ClassVar[str] = RecordKind.SAGA_COMPENSATED.value


class SagaFailed(RecordBody, frozen=True, kw_only=True):
    """``saga_failed``: a compensation failed for good; an operator may resume the saga.

    Attributes:
        error: the compensation's error.
        remaining: the compensations not done, the failed one first.
        dead_letters: how many pending events this record left as dead letters.
    """

    kind: ClassVar[str] = RecordKind.SAGA_FAILED.value
    error: ErrorInfo | None = None
    remaining: list[str] = []
    dead_letters: int = 0

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"error": _error_data(self.error), "remaining": self.remaining}
        if self.dead_letters:
            data["dead_letters"] = self.dead_letters
        return data


class _OperatorAction(RecordBody, frozen=True, kw_only=True):
    """An operator's action on a saga no step runs, with who and why.

    Attributes:
        reason: why.
        by: who asked, if known.
    """

    reason: str = ""
    by: str | None = None

    def data(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by}


class SagaResumed(_OperatorAction, frozen=True, kw_only=True):
    """``saga_resumed``: an operator sent a ``FAILED`` saga back to compensating."""

    kind: ClassVar[str] = RecordKind.SAGA_RESUMED.value


class SagaSuspended(RecordBody, frozen=True, kw_only=True):
    """``saga_suspended``: a step whose ``on_exhausted`` is ``"suspend"`` failed for good
    (the record's ``step``); the saga waits for an operator's retry, skip or abort.

    Attributes:
        error: the step's error (the final ``step_failed``'s).
        handler: the handler that failed, which a retry runs again.
    """

    kind: ClassVar[str] = RecordKind.SAGA_SUSPENDED.value
    error: ErrorInfo | None = None
    handler: str = "run"

    def data(self) -> dict[str, Any]:
        return {"error": _error_data(self.error), "handler": self.handler}


class SagaRetried(_OperatorAction, frozen=True, kw_only=True):
    """``saga_retried``: an operator sent a ``SUSPENDED`` saga back to its failed handler,
    with a fresh retry budget."""

    kind: ClassVar[str] = RecordKind.SAGA_RETRIED.value


class SagaReverted(_OperatorAction, frozen=True, kw_only=True):
    """``saga_reverted``: an operator asked to undo a ``COMPLETED`` saga; every step it
    completed is compensated, in reverse (``compensation_started`` follows)."""

    kind: ClassVar[str] = RecordKind.SAGA_REVERTED.value


def _error_data(error: ErrorInfo | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "step": error.step}


# The body type of each kind.
BODIES: dict[str, type[RecordBody]] = {
    cls.kind: cls
    for cls in (
        SagaStarted,
        StepStarted,
        StepWaiting,
        EventDelivered,
        WaitTimedOut,
        StepCompleted,
        StepFailed,
        StepSkipped,
        AbortRequested,
        CompensationStarted,
        SagaCompleted,
        SagaCompensated,
        SagaFailed,
        SagaResumed,
        SagaSuspended,
        SagaRetried,
        SagaReverted,
    )
}
