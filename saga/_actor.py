"""The actor: one task per active saga, one message at a time, the saga's only writer.

The loop: fold what the log says (`Progress`), append the records that follow from it
(committed before anything can observe them), invoke at most one handler, repeat. When
nothing can happen until an event or a deadline, the actor passivates: its task ends and
nothing of it stays in memory. An event, a timer or an abort brings it back from the store.

Inbox entries reach an actor two ways: handed over by this runtime right after it stored
them, or, for entries another process stored (the command line), as a `Refresh` that
makes the actor re-read its pending inbox from the store.

The actor is the one place that builds and commits a saga's records: a new saga's first
commit (`create`), an operator's action on a saga no actor runs (`operate`: resume, retry,
skip, revert, an abort of a SUSPENDED saga) and every later transition. It asks the
engine that runs it only for what `ActorHost` names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import anyio
import msgspec

from saga._bodies import (
    AbortRequested,
    CompensationStarted,
    EventDelivered,
    RecordBody,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaResumed,
    SagaRetried,
    SagaReverted,
    SagaStarted,
    SagaSuspended,
    StepFailed,
    StepSkipped,
    StepStarted,
    WaitTimedOut,
)
from saga._clock import Clock
from saga._context import StepContext
from saga._definition import Saga
from saga._definitions import Definitions
from saga._errors import LeaseLost, PoisonStep
from saga._events import Event, Wait
from saga._fold import Handler, Progress, Todo, typed_state
from saga._handlers import Invocation, invoke
from saga._index import index_row
from saga._info import ErrorInfo, SagaInfo, Status
from saga._observer import ObserverCalls
from saga._records import (
    Record,
    decode_stored,
    decode_strings,
    encode_payload,
    encode_record,
    new_record,
    plain_record,
)
from saga._requests import decode_request
from saga._store import Append, InboxItem, InboxKind, SagaRow, Store
from saga._store._vocabulary import REQUEST_STATUS
from saga._timers import TimerService

__all__ = ["Actor", "ActorHost", "Close", "Message", "Refresh", "Wake"]

logger = logging.getLogger("saga.runtime")

T = TypeVar("T")

# A first commit refused for a lost lease is tried again under a new one.
_START_ATTEMPTS = 3
_RESUME_ATTEMPTS = 2

# The operator actions a runtime performs on a saga no actor runs, and the status each
# needs (an abort needs SUSPENDED: an open saga's abort is its actor's).
OPERATIONS = {**REQUEST_STATUS, InboxKind.ABORT: Status.SUSPENDED.value}


class Wake:
    """Mailbox message: re-evaluate (a deadline may have passed)."""


class Close:
    """Mailbox message: the runtime is shutting down; stop at the next safe point."""


class Refresh:
    """Mailbox message: another process added to the inbox; re-read it from the store."""


Message = InboxItem | Wake | Close | Refresh


class ActorHost(Protocol):
    """What an actor needs of the engine that runs it (`saga._engine.Engine`)."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def timers(self) -> TimerService: ...

    @property
    def closing(self) -> bool:
        """The runtime is shutting down: start no new handler."""

    @property
    def max_payload_bytes(self) -> int: ...

    @property
    def max_recoveries(self) -> int: ...

    transitions: int  # records committed by this runtime, counted by `Actor.announce`

    @property
    def definitions(self) -> Definitions: ...

    async def fold(self, saga_id: str) -> Progress:
        """Read and fold the saga's log."""

    async def renew_lease(self, stale: int | None = None) -> None:
        """Renew this worker's lease, or register again if it ran out."""

    def try_passivate(self, actor: Actor) -> bool:
        """Unregister an idle actor, unless a message reached it meanwhile."""

    def actor_stopped(self, actor: Actor) -> None:
        """The actor's task ends (after `actor_failed`, if it failed)."""

    def actor_failed(self, actor: Actor, error: Exception) -> None:
        """The actor stopped on ``error``: park its saga, or try again later."""

    def saga_finished(self, saga_id: str, final: Callable[[], SagaInfo] | None = None) -> None:
        """The saga ended; ``final`` gives its `SagaInfo` to whoever waits for that."""

    def perform(self, item: InboxItem) -> None:
        """Perform an operator request this actor cannot (an abort of a SUSPENDED saga)."""


class Actor:
    """Drives one saga from its log. Created and registered by the engine."""

    def __init__(
        self,
        engine: ActorHost,
        saga_id: str,
        progress: Progress | None = None,
        inbox: list[InboxItem] | None = None,
    ) -> None:
        self.saga_id = saga_id
        self._engine = engine
        self._progress = progress
        self._inbox = inbox  # the pending inbox, if the runtime read it already
        self.mailbox, self._inbound = anyio.create_memory_object_stream[Message](math.inf)
        self._events: dict[str, InboxItem] = {}  # pending events by event_id, oldest first
        self._abort: InboxItem | None = None
        self._taken: set[str] = set()  # inbox entries this actor consumed: never take twice
        self._refresh = False
        self._saga: Saga[Any] | None = None
        self._state = b""  # committed state, encoded
        self._batch: list[Record] = []
        self._sealed: list[Record] = []  # handed to the store; `announce` reports them
        self._infos: list[SagaInfo] = []
        self._consumed: list[str] = []
        self._closed: str | None = None
        self._observers = ObserverCalls(())
        self.fence = engine.store.fence  # the lease this actor writes under (shared stores)
        self._first: Invocation | None = None  # set by `create`: the handler to run first

    # -- a saga's first commit here: a new saga, a resumed one --------------------------------

    async def create(
        self, saga: Saga[Any], state: bytes, annotations: Mapping[str, str]
    ) -> SagaRow | None:
        """Write a new saga: ``saga_started`` and its first step's ``step_started``, one commit.

        Once that commit is done, the engine registers the actor, calls `announce` and runs
        it, and it invokes the first handler without reading the store: the store had
        nothing more for a saga that did not exist.

        Args:
            saga: its definition.
            state: the initial state, encoded.
            annotations: what the observers' ``on_start`` returned, for the log.

        Returns:
            ``None``, or the existing row if the id is taken (and nothing is written).
        """
        self._saga = saga
        self._observers = self._engine.definitions.observers_for(saga)
        self._state = state
        self._inbox = []  # a saga that did not exist has nothing in its inbox
        started = SagaStarted(saga_id=self.saga_id, name=saga.name, version=saga.version,
                              steps=list(saga.step_names), state=msgspec.Raw(state),
                              annotations=dict(annotations or {}))  # fmt: skip
        self._add(started, None)
        progress = self._progress
        assert progress is not None
        self._first = self._advance(progress)  # the first step's start: the same commit
        store = self._engine.store
        return await self._first_commit(
            lambda append: store.start(append.row, append.records, fence=append.fence),
            _START_ATTEMPTS,
        )

    async def resume(self, reason: str, by: str | None, request: str | None) -> bool:
        """Write ``saga_resumed`` (see `operate`)."""
        return await self.operate(InboxKind.RESUME, reason, by, request)

    async def operate(self, kind: str, reason: str, by: str | None, request: str | None) -> bool:
        """Write an operator's record: the actor was made with the fold of a saga no actor
        runs, in the status ``kind`` needs (`OPERATIONS`).

        ``resume`` (``FAILED``) writes ``saga_resumed``; ``retry`` (``SUSPENDED``)
        ``saga_retried``; ``skip`` (``SUSPENDED``) ``step_skipped`` with ``by``; ``abort``
        (``SUSPENDED``) an effective ``abort_requested``; ``revert`` (``COMPLETED``)
        ``saga_reverted``. The write is conditional on that status (and takes the saga over
        on a shared store). Once it is committed, the engine registers, announces and runs
        the actor as after `create`; the actor then reads its pending inbox and goes on.

        Args:
            kind: the action, an `InboxKind` in `OPERATIONS`.
            reason: why.
            by: who asked.
            request: the inbox entry asking for it, consumed in the same commit.

        Returns:
            Whether it was written: ``False`` if the saga is no longer in that status.

        Raises:
            DefinitionMismatch: its definition is not registered here.
        """
        progress = self._progress
        assert progress is not None
        state = encode_payload(progress.state, "state", math.inf)  # type: ignore[arg-type]
        self._prepare(progress, state)
        if request is not None:
            self._consumed.append(request)
            self._taken.add(request)
        step = progress.step
        body: RecordBody
        if kind == InboxKind.RESUME:
            body = SagaResumed(reason=reason, by=by)
        elif kind == InboxKind.RETRY:
            body = SagaRetried(reason=reason, by=by)
        elif kind == InboxKind.SKIP:
            body = StepSkipped(reason=reason, by=by)
        elif kind == InboxKind.REVERT:
            body = SagaReverted(reason=reason, by=by)
        else:
            assert kind == InboxKind.ABORT
            body = AbortRequested(reason=reason, by=by, effective=True)
            step = progress.abort_step
        self._add(body, step)
        store = self._engine.store
        status = OPERATIONS[kind]
        return await self._first_commit(
            lambda append: store.append_if(append, status=status), _RESUME_ATTEMPTS
        )

    async def announce(self) -> None:
        """Count the records just committed, then call the observers for each."""
        records, self._sealed = self._sealed, []
        infos, self._infos = self._infos, []
        self._engine.transitions += len(records)
        for record, info in zip(records, infos, strict=False):
            await self._observers.on_transition(plain_record(record), info)

    def discard(self) -> None:
        """Close the mailbox of an actor that will never run."""
        self.mailbox.close()
        self._inbound.close()

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """The actor's task. Never raises: problems park the saga or schedule a retry."""
        try:
            await self._load()
            await self._drive()
        except Exception as error:
            self._engine.actor_failed(self, error)
        finally:
            self._engine.actor_stopped(self)
            self.mailbox.close()
            self._inbound.close()

    async def _load(self) -> None:
        if self._saga is None:  # else it has just written the log's last records
            progress = self._progress
            if progress is None:
                progress = self._progress = await self._engine.fold(self.saga_id)
            state = encode_payload(progress.state, "state", math.inf)  # type: ignore[arg-type]
            self._prepare(progress, state)
        inbox, self._inbox = self._inbox, None
        if inbox is None:
            inbox = await self._engine.store.inbox(self.saga_id)
        for item in inbox:
            self._accept(item)

    def _prepare(self, progress: Progress, state: bytes) -> None:
        self._saga = self._engine.definitions.definition_for(progress)
        self._observers = self._engine.definitions.observers_for(self._saga)
        self._state = state

    def _accept(self, message: Message) -> None:
        if isinstance(message, Refresh):
            self._refresh = True
        elif isinstance(message, InboxItem) and message.event_id not in self._taken:
            # A copy of an entry already taken can still arrive (handed over by a sender
            # while this actor read the same entry from the store): it must not count twice.
            if message.kind == InboxKind.ABORT:
                self._abort = self._abort or message
            elif message.kind == InboxKind.EVENT:
                self._events.setdefault(message.event_id, message)
            # A resume, retry, skip or revert request is the runtime's business
            # (`Engine.operate`), never the actor's.

    # -- the loop -----------------------------------------------------------------------------

    async def _drive(self) -> None:
        progress = self._progress
        assert progress is not None
        first, self._first = self._first, None
        if first is not None and not self._engine.closing:
            await self._invoke(progress, first)  # its step_started was committed by the start
        while True:
            closing = self._engine.closing
            while not closing:  # take every message already there
                try:
                    message = self._inbound.receive_nowait()
                except anyio.WouldBlock:
                    break
                closing = isinstance(message, Close)
                self._accept(message)
            if closing:  # keep what the last handler did, start nothing new
                if self._batch:
                    await self._commit()
                return
            if self._refresh:
                # Everything this actor consumed is committed by now, so what the store
                # still has pending is exactly what it has not taken.
                self._refresh = False
                for item in await self._engine.store.inbox(self.saga_id):
                    self._accept(item)
            invocation = self._advance(progress)
            if self._batch:
                await self._commit()
            if progress.terminal:
                self._engine.saga_finished(self.saga_id, self._final_info)
                return
            if progress.status is Status.SUSPENDED:  # nothing runs until an operator acts
                if self._engine.try_passivate(self):
                    abort, self._abort = self._abort, None
                    if abort is not None:  # a runtime performs it (`Engine.operate`)
                        self._engine.perform(abort)
                    return
                self._accept(await self._inbound.receive())
                continue
            if invocation is not None:
                await self._invoke(progress, invocation)
                continue
            deadline = progress.wake_at
            if deadline is not None:
                if deadline <= self._engine.clock.now():
                    continue
                self._engine.timers.arm(self.saga_id, deadline)
            if self._engine.try_passivate(self):
                return
            self._accept(await self._inbound.receive())

    def _final_info(self) -> SagaInfo:
        """The `SagaInfo` of the ended saga, as `Runtime.get` would read it back."""
        progress = self._progress
        assert progress is not None
        assert self._saga is not None
        return progress.info(self._engine.definitions.decode_state(self._saga, self._state))

    def _advance(self, p: Progress) -> Invocation | None:
        """Append every record the log owes now; return the handler to invoke, if any."""
        saga = self._saga
        assert saga is not None
        now = self._engine.clock.now()
        while not p.terminal:
            step = p.step
            suspends = p.todo == Todo.COMPENSATE and self._suspends(p, saga)
            if self._abort is not None and p.status is not Status.SUSPENDED and not suspends:
                what = f"saga {self.saga_id!r}: abort request {self._abort.event_id!r}"
                reason, by = decode_request(self._abort.payload, what)
                abort, self._abort = self._abort, None
                effective = p.can_abort
                self._consumed.append(abort.event_id)
                self._taken.add(abort.event_id)
                aborted = AbortRequested(reason=reason, by=by, effective=effective)
                self._add(aborted, p.abort_step if effective else step)
            elif p.todo == Todo.COMPLETE:
                self._closed = "saga completed"
                self._add(SagaCompleted(dead_letters=self._dead_letters()), None)
            elif p.todo == Todo.COMPENSATED:
                self._closed = "saga compensated"
                self._add(SagaCompensated(dead_letters=self._dead_letters()), None)
            elif p.todo == Todo.FAIL:
                self._closed = "saga failed"
                failed = SagaFailed(error=p.error, remaining=list(p.queue),
                                    dead_letters=self._dead_letters())  # fmt: skip
                self._add(failed, step)
            elif suspends:
                suspended = SagaSuspended(error=p.error, handler=p.failed_handler or Handler.RUN)
                self._add(suspended, step)
            elif p.status is Status.SUSPENDED:
                return None  # an abort waiting here is the runtime's (see `_drive`)
            elif p.todo == Todo.COMPENSATE:
                queue = self._compensation_queue(p, saga)
                self._add(CompensationStarted(error=p.error, failed_step=p.failed_step,
                                              steps=queue), None)  # fmt: skip
            elif p.handler is not None:
                assert step is not None
                if p.in_flight and p.recoveries + 1 >= self._engine.max_recoveries:
                    message = (
                        f"handler {p.handler} of step {step!r} was interrupted "
                        f"{p.recoveries + 1} times by crashes"
                    )
                    error = ErrorInfo(type=PoisonStep.__name__, message=message)
                    self._add(StepFailed(compensating=p.compensating, handler=p.handler,
                                         attempt=p.attempt, error=error, retry_at=None,
                                         final=True), step)  # fmt: skip
                    continue
                if p.retry_at is not None and now < p.retry_at:
                    return None
                if self._skips(p, saga, step):
                    continue
                recovery = p.recoveries + 1 if p.in_flight else 0
                self._add(StepStarted(compensating=p.compensating, handler=p.handler,
                                      attempt=p.attempt, recovery=recovery), step)  # fmt: skip
                return Invocation(saga.steps[saga.step_names.index(step)], p.handler,
                                   p.attempt, p.compensating, p.event)  # fmt: skip
            elif p.wait is not None:
                item = self._match(p.wait)
                if item is not None:
                    what = f"saga {self.saga_id!r}: event {item.event_id!r}"
                    payload = decode_stored(item.payload, f"{what}: its payload")
                    headers = {}
                    if item.headers:
                        headers = decode_strings(item.headers, f"{what}: its headers")
                    del self._events[item.event_id]
                    self._consumed.append(item.event_id)
                    self._taken.add(item.event_id)
                    self._engine.timers.disarm(self.saga_id)
                    event = Event(name=item.name, payload=payload, key=item.key,
                                  event_id=item.event_id, headers=headers)  # fmt: skip
                    self._add(EventDelivered(compensating=p.compensating, event=event), step)
                elif p.deadline is not None and now >= p.deadline:
                    self._add(WaitTimedOut(compensating=p.compensating), step)
                else:
                    return None
            else:  # pragma: no cover - the fold always leaves something to do or wait for
                raise AssertionError(f"saga {self.saga_id!r} has nothing to do at seq {p.seq}")
        return None

    @staticmethod
    def _suspends(p: Progress, saga: Saga[Any]) -> bool:
        """Whether the forward step that has just failed for good suspends the saga."""
        failed = p.failed_step
        if not p.exhausted or failed is None:
            return False
        return saga.steps[saga.step_names.index(failed)].on_exhausted == "suspend"

    def _skips(self, p: Progress, saga: Saga[Any], step: str) -> bool:
        """Whether the step whose turn has just come does not run (``should_run``); if so,
        its ``step_skipped`` (or, if ``should_run`` raised, its final ``step_failed``) is
        added."""
        if step not in saga.conditional or p.handler != Handler.RUN or p.compensating:
            return False
        if p.in_flight or step in p.started:
            return False
        definition = saga.steps[saga.step_names.index(step)]
        state = self._engine.definitions.decode_state(saga, self._state)
        try:
            runs = definition.should_run(state)
        except Exception as error:
            failed = StepFailed(compensating=False, handler="should_run", attempt=1,
                                error=ErrorInfo.from_exception(error, None), retry_at=None,
                                final=True)  # fmt: skip
            self._add(failed, step)
            return True
        if runs:
            return False
        self._add(StepSkipped(reason="should_run returned False"), step)
        return True

    def _dead_letters(self) -> int:
        """How many events a terminal record dead-letters (the count it records).

        The store dead-letters every pending event in the terminal record's commit; the
        count is what this actor holds, so metrics need not query the store. An event whose
        send commits while the terminal record is being written is dead-lettered too, but
        may be missing from the count.
        """
        return len(self._events)

    def _match(self, wait: Wait) -> InboxItem | None:
        """The oldest pending event that satisfies ``wait``, if any."""
        for item in self._events.values():
            if wait.matches(item.name, item.key):
                return item
        return None

    @staticmethod
    def _compensation_queue(p: Progress, saga: Saga[Any]) -> list[str]:
        queue = []
        failed = p.failed_step
        if (
            failed is not None
            and failed in p.started
            and failed not in p.completed
            and saga.steps[saga.step_names.index(failed)].compensate_on_failure
        ):
            queue.append(failed)
        queue.extend(reversed(p.completed))
        return queue

    def _add(self, body: RecordBody, step: str | None) -> None:
        """Build the log's next record from ``body``, fold it in (as built: never decoded
        back), and add it to the next commit."""
        progress = self._progress
        seq = 1 if progress is None else progress.seq + 1
        record = new_record(body, seq=seq, at=self._engine.clock.now(), step=step)
        if progress is None:
            progress = self._progress = Progress(record)
        else:
            progress.apply(record)
        self._batch.append(record)
        if self._observers:
            saga = self._saga
            state = progress.state if saga is None else typed_state(progress.state, saga.state)
            self._infos.append(progress.info(state))

    async def _commit(self) -> None:
        """Commit the records added since the last commit (one `Store.append`), announce them."""
        await self._engine.store.append(self._seal())
        if self._observers:
            await self.announce()
        else:  # the hot path: count them, nobody to tell
            self._engine.transitions += len(self._sealed)
            self._sealed = []

    async def _first_commit(self, write: Callable[[Append], Awaitable[T]], attempts: int) -> T:
        """Commit the records that bring a saga to this worker: `create`, `operate`.

        Nothing may come to a worker under a lease another worker may already have counted
        dead: a write refused for a lost lease (`LeaseLost`, nothing written) is tried again
        under the lease this worker holds after registering again, up to ``attempts`` times.
        """
        append = self._seal()
        for _ in range(attempts - 1):
            try:
                return await write(append)
            except LeaseLost:
                # This worker was paused or cut off past its lease; one re-registration
                # serves however many writers find it gone at once.
                await self._engine.renew_lease(stale=self.fence)
                self.fence = self._engine.store.fence
                append = msgspec.structs.replace(append, fence=self.fence)
        return await write(append)

    def _seal(self) -> Append:
        """The records added since the last commit as one write, with the index row after
        them and the inbox entries they take; `announce` reports them once committed."""
        progress = self._progress
        assert progress is not None
        records, self._batch = self._batch, []
        self._sealed += records
        consumed, self._consumed = self._consumed, []
        closed, self._closed = self._closed, None
        return Append(
            saga_id=self.saga_id,
            records=[(r.seq, encode_record(r)) for r in records],
            row=index_row(progress, self._state),
            consumed=consumed,
            closed=closed,
            fence=self.fence,
        )

    # -- handlers -----------------------------------------------------------------------------

    async def _invoke(self, p: Progress, inv: Invocation) -> None:
        saga = self._saga
        assert saga is not None
        ctx: StepContext[Any] = StepContext(
            saga_id=self.saga_id,
            saga_name=saga.name,
            state=self._engine.definitions.decode_state(saga, self._state),
            step=inv.step.name,
            attempt=inv.attempt,
            compensating=inv.compensating,
            event=inv.event,
            annotations=p.annotations,
        )
        engine = self._engine
        outcome = await invoke(inv, ctx, self._observers, engine.clock, engine.max_payload_bytes)
        if outcome.state is not None:
            self._state = outcome.state
        self._add(outcome.body, inv.step.name)
