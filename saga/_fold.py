"""The fold: a saga's whole condition as a pure function of its log.

`Progress` is rebuilt record by record. The actor uses it to decide what to do next,
recovery uses it to resume, and `saga.replay` exposes it. Nothing here runs step code,
reads a clock or touches the store, so live runs, recovery and replay cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from saga._errors import CorruptLog
from saga._info import ErrorInfo, SagaInfo, Status
from saga._records import Kind, Record, decode_payload

__all__ = ["Handler", "Progress"]


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

    def __init__(self, first: Record) -> None:
        if first.seq != 1 or first.kind != Kind.SAGA_STARTED:
            raise CorruptLog(f"a log must open with saga_started at seq 1, got {first.kind!r}")
        data = first.data
        try:
            self.saga_id: str = data["saga_id"]
            self.name: str = data["name"]
            self.version: int = data["version"]
            self.steps: tuple[str, ...] = tuple(data["steps"])
            self._state: Any = data["state"]
            self.annotations: dict[str, str] = dict(data.get("annotations") or {})
        except (KeyError, TypeError) as error:
            raise CorruptLog(f"saga_started lacks {error}") from None
        if not self.steps or not all(isinstance(s, str) for s in self.steps):
            raise CorruptLog("saga_started names no valid steps")
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
        self.event: dict[str, Any] | None = None  # input of on_event / on_compensation_event
        self.in_flight = False  # a step_started with no record ending it yet
        self.recoveries = 0  # consecutive interrupted invocations of the current handler
        self.retry_at: float | None = None
        self.wait: dict[str, Any] | None = None  # {"name", "key", "deadline"}
        self.todo: str | None = None
        self.error: ErrorInfo | None = None  # why it compensates, or why it failed
        self.cause: ErrorInfo | None = None  # why compensation started
        self.failed_step: str | None = None

    @classmethod
    def from_records(cls, records: Sequence[Record]) -> Progress:
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
            deadline: float | None = self.wait.get("deadline")
            return deadline
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

    def apply(self, record: Record) -> None:
        """Advance by one record. Raises `CorruptLog` if it cannot follow what came before."""
        if record.seq != self.seq + 1:
            raise CorruptLog(f"record seq {record.seq} follows seq {self.seq}")
        if self.terminal and record.kind != Kind.SAGA_RESUMED:
            raise CorruptLog(f"{record.kind} after the terminal record at seq {self.seq}")
        apply = _APPLY.get(record.kind)
        if apply is None:
            raise CorruptLog(f"unknown record kind {record.kind!r} at seq {record.seq}")
        try:
            apply(self, record, record.data)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CorruptLog(f"bad {record.kind} record at seq {record.seq}: {error!r}") from None
        self.seq = record.seq
        self.updated_at = record.at

    def _check_step(self, record: Record) -> None:
        if record.step != self.step or record.step is None:
            raise CorruptLog(
                f"{record.kind} at seq {record.seq} names step {record.step!r}, "
                f"but the current step is {self.step!r}"
            )
        if bool(record.data.get("compensating")) != self.compensating:
            raise CorruptLog(f"{record.kind} at seq {record.seq} has the wrong direction")

    def _active_status(self) -> Status:
        return Status.COMPENSATING if self.compensating else Status.RUNNING

    def _step_started(self, record: Record, data: dict[str, Any]) -> None:
        self._check_step(record)
        handler = data["handler"]
        if handler not in Handler.ALL:
            raise ValueError(f"unknown handler {handler!r}")
        self.recoveries = self.recoveries + 1 if self.in_flight else 0
        self.in_flight = True
        self.handler = handler
        self.attempt = int(data["attempt"])
        self.retry_at = None
        self.wait = None
        if not self.compensating:
            self.started.add(record.step)  # type: ignore[arg-type]
        self.status = self._active_status()

    def _step_waiting(self, record: Record, data: dict[str, Any]) -> None:
        self._check_step(record)
        self.in_flight = False
        self.handler = None
        self.event = None
        self._state = data["state"]
        self.wait = {
            "name": data["event"],
            "key": data.get("key"),
            "deadline": data.get("deadline"),
        }
        self.status = Status.COMPENSATING if self.compensating else Status.WAITING

    def _event_delivered(self, record: Record, data: dict[str, Any]) -> None:
        self._check_step(record)
        if self.wait is None:
            raise ValueError("no wait to deliver to")
        event = data["event"]
        if not isinstance(event, dict):
            raise TypeError("event must be a map")
        self.wait = None
        self.event = event
        self.handler = Handler.ON_COMPENSATION_EVENT if self.compensating else Handler.ON_EVENT
        self.attempt = 1
        self.status = self._active_status()

    def _wait_timed_out(self, record: Record, data: dict[str, Any]) -> None:
        self._check_step(record)
        if self.wait is None:
            raise ValueError("no wait to time out")
        self.wait = None
        self.event = None
        self.handler = Handler.ON_TIMEOUT
        self.attempt = 1
        self.status = self._active_status()

    def _step_completed(self, record: Record, data: dict[str, Any]) -> None:
        self._check_step(record)
        self.in_flight = False
        self.event = None
        self.wait = None
        self._state = data["state"]
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

    def _step_failed(self, record: Record, data: dict[str, Any]) -> None:
        self._check_step(record)
        self.in_flight = False
        if data.get("final"):
            error = data["error"]
            self.error = ErrorInfo(type=error["type"], message=error["message"], step=record.step)
            self.handler = None
            self.retry_at = None
            if self.compensating:
                self.todo = Todo.FAIL
            else:
                self.todo = Todo.COMPENSATE
                self.failed_step = record.step
        else:
            self.handler = data["handler"]
            self.attempt = int(data["attempt"]) + 1
            self.retry_at = data.get("retry_at")
        self.status = self._active_status()

    def _abort_requested(self, record: Record, data: dict[str, Any]) -> None:
        if not data.get("effective"):
            return
        if not self.can_abort:
            raise ValueError("an effective abort outside the forward phase")
        step = self.abort_step
        self.error = ErrorInfo(type="Aborted", message=str(data["reason"]), step=step)
        self.failed_step = step
        self.handler = None
        self.in_flight = False
        self.retry_at = None
        self.wait = None
        self.event = None
        self.todo = Todo.COMPENSATE

    def _compensation_started(self, record: Record, data: dict[str, Any]) -> None:
        if self.todo != Todo.COMPENSATE:
            raise ValueError("compensation_started without a failure or abort")
        queue = list(data["steps"])
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

    def _saga_completed(self, record: Record, data: dict[str, Any]) -> None:
        if self.todo != Todo.COMPLETE:
            raise ValueError("saga_completed before every step completed")
        self.todo = None
        self.status = Status.COMPLETED

    def _saga_compensated(self, record: Record, data: dict[str, Any]) -> None:
        if self.todo != Todo.COMPENSATED:
            raise ValueError("saga_compensated before every compensation ran")
        self.todo = None
        self.status = Status.COMPENSATED

    def _saga_failed(self, record: Record, data: dict[str, Any]) -> None:
        if self.todo != Todo.FAIL:
            raise ValueError("saga_failed without a failed compensation")
        self.todo = None
        self.status = Status.FAILED

    def _saga_resumed(self, record: Record, data: dict[str, Any]) -> None:
        if self.status is not Status.FAILED:
            raise ValueError("saga_resumed on a saga that is not FAILED")
        self.status = Status.COMPENSATING
        self.error = self.cause
        self.handler = Handler.COMPENSATE
        self.attempt = 1
        self.event = None
        self.wait = None
        self.retry_at = None
        self.in_flight = False
        self.recoveries = 0


_APPLY = {
    Kind.STEP_STARTED: Progress._step_started,
    Kind.STEP_WAITING: Progress._step_waiting,
    Kind.EVENT_DELIVERED: Progress._event_delivered,
    Kind.WAIT_TIMED_OUT: Progress._wait_timed_out,
    Kind.STEP_COMPLETED: Progress._step_completed,
    Kind.STEP_FAILED: Progress._step_failed,
    Kind.ABORT_REQUESTED: Progress._abort_requested,
    Kind.COMPENSATION_STARTED: Progress._compensation_started,
    Kind.SAGA_COMPLETED: Progress._saga_completed,
    Kind.SAGA_COMPENSATED: Progress._saga_compensated,
    Kind.SAGA_FAILED: Progress._saga_failed,
    Kind.SAGA_RESUMED: Progress._saga_resumed,
}


def typed_state(state: Any, state_type: type[msgspec.Struct]) -> Any:
    """Convert a plain saved state to the definition's state type."""
    try:
        return msgspec.convert(state, state_type)
    except msgspec.ValidationError as error:
        raise CorruptLog(f"saved state does not fit {state_type.__name__}: {error}") from None
