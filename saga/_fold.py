"""The fold: a saga's whole condition as a pure function of its log.

`Progress` is rebuilt record by record. The actor uses it to decide what to do next,
recovery uses it to resume, and `saga.replay` exposes it. Nothing here runs step code,
reads a clock or touches the store, so live runs, recovery and replay cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import msgspec

from saga._bodies import (
    AbortRequested,
    CompensationStarted,
    EventDelivered,
    RecordBody,
    RecordKind,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaResumed,
    SagaRetried,
    SagaReverted,
    SagaStarted,
    SagaSuspended,
    StepBody,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepWaiting,
    WaitTimedOut,
)
from saga._errors import CorruptLog
from saga._events import Event, Wait
from saga._info import ErrorInfo, SagaInfo, Status
from saga._records import Record, StoredRecord, decode_payload

__all__ = ["Folded", "Handler", "Progress"]

Folded: TypeAlias = Record | StoredRecord
"""What the fold reads: a `Record`, or a `StoredRecord` where nobody sees the records."""


class Handler:
    """Names of step handlers, as recorded in ``step_started``."""

    RUN = "run"
    ON_EVENT = "on_event"
    ON_TIMEOUT = "on_timeout"
    COMPENSATE = "compensate"
    ON_COMPENSATION_EVENT = "on_compensation_event"

    ALL = frozenset({RUN, ON_EVENT, ON_TIMEOUT, COMPENSATE, ON_COMPENSATION_EVENT})


class Todo:
    """A record the actor owes the log before anything else happens."""

    COMPLETE = "complete"
    COMPENSATE = "compensate"
    COMPENSATED = "compensated"
    FAIL = "fail"


class Progress:
    """Everything the log says about one saga, after the records applied so far."""

    def __init__(self, first: Folded) -> None:
        if first.seq != 1 or first.kind != RecordKind.SAGA_STARTED:
            raise CorruptLog(f"a log must open with saga_started at seq 1, got {first.kind!r}")
        started = first.body
        assert isinstance(started, SagaStarted)
        self.saga_id = started.saga_id
        self.name = started.name
        self.version = started.version
        self.steps = tuple(started.steps)
        self._state: Any = started.state
        self.annotations = dict(started.annotations)
        if not self.steps:
            raise CorruptLog("saga_started names no steps")
        self.seq = 1
        self.created_at = first.at
        self.updated_at = first.at
        self.status = Status.RUNNING
        self.compensating = False
        self.index = 0  # current forward step
        self.completed: list[str] = []  # forward steps completed, in order
        self.started: set[str] = set()  # forward steps that ever had a step_started
        self.queue: list[str] = []  # compensations still to run; the head is current
        self.handler: str | None = Handler.RUN  # handler to invoke next, if any
        self.attempt = 1
        self.event: Event | None = None  # input of on_event / on_compensation_event
        self.in_flight = False  # a step_started with no record ending it yet
        self.recoveries = 0  # consecutive interrupted invocations of the current handler
        self.retry_at: float | None = None
        self.wait: Wait | None = None  # what the current step waits for
        self.deadline: float | None = None  # when that wait times out, if it does
        self.todo: str | None = None
        self.error: ErrorInfo | None = None  # why it compensates, or why it failed
        self.cause: ErrorInfo | None = None  # why compensation started
        self.failed_step: str | None = None
        # The current forward step failed for good (its attempts used up): its definition
        # decides between compensation_started and saga_suspended.
        self.exhausted = False
        self.failed_handler: str | None = None  # the handler that failed for good

    @classmethod
    def from_records(cls, records: Sequence[Folded]) -> Progress:
        """Fold a whole log. Raises `CorruptLog` on an empty or inconsistent log."""
        if not records:
            raise CorruptLog("the log is empty")
        progress = cls(records[0])
        for record in records[1:]:
            progress.apply(record)
        return progress

    # -- what the log says now ------------------------------------------------------------

    @property
    def state(self) -> Any:
        """The state as last saved, as plain values."""
        state = self._state
        if isinstance(state, msgspec.Raw):
            # A live record carries the state as its encoding (`saga._records.Raw`).
            state = self._state = decode_payload(state)
        return state

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def step(self) -> str | None:
        """The step being run, waited on or compensated, if any."""
        if self.compensating or self.status is Status.FAILED:
            return self.queue[0] if self.queue else None
        if self.status is Status.COMPLETED or self.index >= len(self.steps):
            return None
        return self.steps[self.index]

    @property
    def abort_step(self) -> str | None:
        """The step an abort now fails: the current one once started, else the last done."""
        step = self.step
        if step is not None and step in self.started:
            return step
        return self.completed[-1] if self.completed else None

    @property
    def can_abort(self) -> bool:
        """Whether an abort now would compensate (forward phase, even if all steps are done)."""
        return not self.compensating and self.todo in (None, Todo.COMPLETE) and not self.terminal

    @property
    def wake_at(self) -> float | None:
        """The durable deadline the saga sleeps until: a retry backoff or a wait's timeout."""
        if self.terminal:
            return None
        if self.handler is not None and self.retry_at is not None:
            return self.retry_at
        if self.wait is not None:
            return self.deadline
        return None

    @property
    def shown_step(self) -> str | None:
        """The step `SagaInfo.step` shows: none once completed or compensated."""
        if self.status in (Status.COMPLETED, Status.COMPENSATED):
            return None
        return self.step

    def info(self, state: Any = None) -> SagaInfo:
        """The `SagaInfo` now; ``state`` overrides the plain state (e.g. a typed copy)."""
        return SagaInfo(
            saga_id=self.saga_id,
            name=self.name,
            version=self.version,
            status=self.status,
            step=self.shown_step,
            state=self.state if state is None else state,
            error=self.error,
            created_at=self.created_at,
            updated_at=self.updated_at,
            seq=self.seq,
            annotations=self.annotations,
        )

    # -- the fold ---------------------------------------------------------------------------

    def apply(self, record: Folded) -> None:
        """Advance by one record. Raises `CorruptLog` if it cannot follow what came before.

        The record's body is decoded once (`Record.body`; a record the actor built carries
        the body it was built from); recovery folds `StoredRecord`s, typed from the bytes.
        """
        if record.seq != self.seq + 1:
            raise CorruptLog(f"record seq {record.seq} follows seq {self.seq}")
        if self.terminal and record.kind not in _AFTER_TERMINAL:
            raise CorruptLog(f"{record.kind} after the terminal record at seq {self.seq}")
        body = record.body
        apply = _APPLY.get(type(body))
        if apply is None:  # saga_started
            raise CorruptLog(f"{record.kind} at seq {record.seq}: a log starts only once")
        try:
            apply(self, record, body)
        except (TypeError, ValueError, IndexError) as error:
            raise CorruptLog(f"bad {record.kind} record at seq {record.seq}: {error!r}") from None
        self.seq = record.seq
        self.updated_at = record.at

    def _check_step(self, record: Folded, body: StepBody) -> None:
        if record.step != self.step or record.step is None:
            raise CorruptLog(
                f"{record.kind} at seq {record.seq} names step {record.step!r}, "
                f"but the current step is {self.step!r}"
            )
        if body.compensating != self.compensating:
            raise CorruptLog(f"{record.kind} at seq {record.seq} has the wrong direction")

    def _active_status(self) -> Status:
        return Status.COMPENSATING if self.compensating else Status.RUNNING

    def _step_started(self, record: Folded, body: StepStarted) -> None:
        self._check_step(record, body)
        handler = body.handler
        if handler not in Handler.ALL:
            raise ValueError(f"unknown handler {handler!r}")
        self.recoveries = self.recoveries + 1 if self.in_flight else 0
        self.in_flight = True
        self.handler = handler
        self.attempt = body.attempt
        self.retry_at = None
        self.wait = self.deadline = None
        if not self.compensating:
            self.started.add(record.step)  # type: ignore[arg-type]
        self.status = self._active_status()

    def _step_waiting(self, record: Folded, body: StepWaiting) -> None:
        self._check_step(record, body)
        self.in_flight = False
        self.handler = None
        self.event = None
        self._state = body.state
        self.wait = body.wait
        self.deadline = body.deadline
        self.status = Status.COMPENSATING if self.compensating else Status.WAITING

    def _event_delivered(self, record: Folded, body: EventDelivered) -> None:
        self._check_step(record, body)
        if self.wait is None:
            raise ValueError("no wait to deliver to")
        self.wait = self.deadline = None
        self.event = body.event
        self.handler = Handler.ON_COMPENSATION_EVENT if self.compensating else Handler.ON_EVENT
        self.attempt = 1
        self.status = self._active_status()

    def _wait_timed_out(self, record: Folded, body: WaitTimedOut) -> None:
        self._check_step(record, body)
        if self.wait is None:
            raise ValueError("no wait to time out")
        self.wait = self.deadline = None
        self.event = None
        self.handler = Handler.ON_TIMEOUT
        self.attempt = 1
        self.status = self._active_status()

    def _step_completed(self, record: Folded, body: StepCompleted) -> None:
        self._check_step(record, body)
        self.in_flight = False
        self.event = None
        self.wait = self.deadline = None
        self._state = body.state
        self.attempt = 1
        if self.compensating:
            self.queue.pop(0)
            self.handler = Handler.COMPENSATE if self.queue else None
            self.todo = None if self.queue else Todo.COMPENSATED
        else:
            self.completed.append(self.steps[self.index])
            self.index += 1
            more = self.index < len(self.steps)
            self.handler = Handler.RUN if more else None
            self.todo = None if more else Todo.COMPLETE
        self.status = self._active_status()

    def _step_skipped(self, record: Folded, body: StepSkipped) -> None:
        self._check_step(record, body)
        if self.status is Status.SUSPENDED:  # an operator skips the step that failed
            self.error = None
            self.failed_step = self.failed_handler = None
            self.event = None
            self.recoveries = 0
        elif self.compensating or self.in_flight or self.handler != Handler.RUN:
            raise ValueError("only a forward step whose turn has come can be skipped")
        elif record.step in self.started:
            raise ValueError("a step that started cannot be skipped")
        self.index += 1  # not completed: never compensated
        more = self.index < len(self.steps)
        self.handler = Handler.RUN if more else None
        self.todo = None if more else Todo.COMPLETE
        self.attempt = 1
        self.status = self._active_status()

    def _step_failed(self, record: Folded, body: StepFailed) -> None:
        self._check_step(record, body)
        self.in_flight = False
        if body.final:
            error = body.error
            self.error = ErrorInfo(type=error.type, message=error.message, step=record.step)
            self.handler = None
            self.retry_at = None
            if self.compensating:
                self.todo = Todo.FAIL
            else:
                self.todo = Todo.COMPENSATE
                self.failed_step = record.step
                self.exhausted = True
                self.failed_handler = body.handler
        else:
            self.handler = body.handler
            self.attempt = body.attempt + 1
            self.retry_at = body.retry_at
        self.status = self._active_status()

    def _abort_requested(self, record: Folded, body: AbortRequested) -> None:
        if not body.effective:
            return
        if not self.can_abort:
            raise ValueError("an effective abort outside the forward phase")
        step = self.abort_step
        if self.status is Status.SUSPENDED:  # open again: it compensates next
            self.status = Status.RUNNING
        self.exhausted = False
        self.error = ErrorInfo(type="Aborted", message=body.reason, step=step)
        self.failed_step = step
        self.handler = None
        self.in_flight = False
        self.retry_at = None
        self.wait = self.deadline = None
        self.event = None
        self.todo = Todo.COMPENSATE

    def _compensation_started(self, record: Folded, body: CompensationStarted) -> None:
        if self.todo != Todo.COMPENSATE:
            raise ValueError("compensation_started without a failure or abort")
        self.exhausted = False
        queue = list(body.steps)
        unknown = set(queue) - set(self.started)
        if unknown:
            raise ValueError(f"compensations for steps that never started: {sorted(unknown)}")
        self.compensating = True
        self.cause = self.error
        self.queue = queue
        self.todo = None if queue else Todo.COMPENSATED
        self.handler = Handler.COMPENSATE if queue else None
        self.attempt = 1
        self.status = Status.COMPENSATING

    def _saga_completed(self, record: Folded, body: SagaCompleted) -> None:
        if self.todo != Todo.COMPLETE:
            raise ValueError("saga_completed before every step completed")
        self.todo = None
        self.status = Status.COMPLETED

    def _saga_compensated(self, record: Folded, body: SagaCompensated) -> None:
        if self.todo != Todo.COMPENSATED:
            raise ValueError("saga_compensated before every compensation ran")
        self.todo = None
        self.status = Status.COMPENSATED

    def _saga_failed(self, record: Folded, body: SagaFailed) -> None:
        if self.todo != Todo.FAIL:
            raise ValueError("saga_failed without a failed compensation")
        self.todo = None
        self.status = Status.FAILED

    def _saga_resumed(self, record: Folded, body: SagaResumed) -> None:
        if self.status is not Status.FAILED:
            raise ValueError("saga_resumed on a saga that is not FAILED")
        self.status = Status.COMPENSATING
        self.error = self.cause
        self.handler = Handler.COMPENSATE
        self.attempt = 1
        self.event = None
        self.wait = self.deadline = None
        self.retry_at = None
        self.in_flight = False
        self.recoveries = 0

    def _saga_suspended(self, record: Folded, body: SagaSuspended) -> None:
        if self.todo != Todo.COMPENSATE or not self.exhausted or self.compensating:
            raise ValueError("saga_suspended without a forward step that failed for good")
        if record.step != self.step or record.step is None:
            raise ValueError(f"saga_suspended names step {record.step!r}, not {self.step!r}")
        self.todo = None
        self.exhausted = False
        self.handler = None
        self.failed_handler = body.handler
        if body.error is not None:
            self.error = body.error
        self.status = Status.SUSPENDED

    def _saga_retried(self, record: Folded, body: SagaRetried) -> None:
        if self.status is not Status.SUSPENDED:
            raise ValueError("saga_retried on a saga that is not SUSPENDED")
        handler = self.failed_handler
        self.handler = handler if handler in Handler.ALL else Handler.RUN
        self.attempt = 1
        self.error = None
        self.failed_step = self.failed_handler = None
        self.in_flight = False
        self.recoveries = 0
        self.retry_at = None
        self.status = Status.RUNNING

    def _saga_reverted(self, record: Folded, body: SagaReverted) -> None:
        if self.status is not Status.COMPLETED:
            raise ValueError("saga_reverted on a saga that is not COMPLETED")
        self.todo = Todo.COMPENSATE
        self.failed_step = None
        self.error = ErrorInfo(type="Reverted", message=body.reason, step=None)
        self.status = Status.COMPENSATING


# The records that may follow a terminal one: an operator's resume (FAILED) or revert
# (COMPLETED); each checks the status it needs.
_AFTER_TERMINAL = frozenset({RecordKind.SAGA_RESUMED.value, RecordKind.SAGA_REVERTED.value})

# How each body moves the fold (saga_started opens it: `Progress.__init__`).
_APPLY: dict[type[RecordBody], Callable[[Progress, Any, Any], None]] = {
    StepStarted: Progress._step_started,
    StepWaiting: Progress._step_waiting,
    EventDelivered: Progress._event_delivered,
    WaitTimedOut: Progress._wait_timed_out,
    StepCompleted: Progress._step_completed,
    StepFailed: Progress._step_failed,
    StepSkipped: Progress._step_skipped,
    AbortRequested: Progress._abort_requested,
    CompensationStarted: Progress._compensation_started,
    SagaCompleted: Progress._saga_completed,
    SagaCompensated: Progress._saga_compensated,
    SagaFailed: Progress._saga_failed,
    SagaResumed: Progress._saga_resumed,
    SagaSuspended: Progress._saga_suspended,
    SagaRetried: Progress._saga_retried,
    SagaReverted: Progress._saga_reverted,
}


def typed_state(state: Any, state_type: type[msgspec.Struct]) -> Any:
    """Convert a plain saved state to the definition's state type."""
    try:
        return msgspec.convert(state, state_type)
    except msgspec.ValidationError as error:
        raise CorruptLog(f"saved state does not fit {state_type.__name__}: {error}") from None
