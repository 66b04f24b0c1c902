"""`Runtime`: opens the store, recovers every open saga, and runs actors for them."""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import msgspec

from saga._actor import Actor, Close, Wake, index_row
from saga._clock import Clock, SystemClock
from saga._definition import Saga
from saga._errors import (
    CorruptLog,
    DefinitionMismatch,
    SagaClosed,
    SagaError,
    SagaExists,
    StoreError,
    UnknownDefinition,
    UnknownSaga,
)
from saga._fold import Progress, typed_state
from saga._handle import SagaHandle
from saga._info import ErrorInfo, SagaInfo, Status
from saga._observer import Observer, ObserverCalls
from saga._records import Kind, Record, decode_payload, decode_record, encode_payload, encode_record
from saga._replay import check_definition
from saga._store import Append, InboxItem, SagaRow, SendResult, Store, open_store
from saga._store._base import DeadLetterRow
from saga._timers import TimerService
from saga._validate import check_name

__all__ = ["DeadLetter", "Runtime"]

logger = logging.getLogger("saga.runtime")
_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)


class DeadLetter(msgspec.Struct, frozen=True):
    """An event that no step consumed before its saga ended."""

    saga_id: str
    event_id: str
    name: str
    key: str | None
    payload: Any
    sent_at: float
    reason: str


class Runtime:
    """Runs sagas on a store. Use it as ``async with Runtime(url, sagas=[...]) as runtime``.

    Entering opens the store, creates its schema and recovers every saga that is not
    terminal; leaving lets running handlers finish (up to ``shutdown_grace`` seconds) and
    closes the store. A handler still running after that is cancelled and, like after a
    crash, runs again on the next start.

    Args:
        url: ``sqlite:///path.db`` (default ``sqlite:///saga.db``) or ``sqlite:///:memory:``.
        sagas: the definitions this runtime runs; several versions of one name may coexist.
        observers: `Observer` instances called for every saga.
        clock: the time source (default the system clock; ``saga.testing.FakeClock`` in tests).
        durability: ``"full"`` (``synchronous=FULL``, default) or ``"normal"``.
        max_payload_bytes: the largest encoded state or event payload accepted.
        max_recoveries: interrupted runs of one handler after which it counts as failed.
        shutdown_grace: seconds handlers get to finish when the runtime exits.
        max_batch: most writes committed in one transaction.

    Raises:
        ValueError: two definitions with the same name and version, or a bad option.
    """

    def __init__(
        self,
        url: str = "sqlite:///saga.db",
        *,
        sagas: Sequence[Saga[Any]],
        observers: Sequence[Observer] = (),
        clock: Clock | None = None,
        durability: str = "full",
        max_payload_bytes: int = 1 << 20,
        max_recoveries: int = 10,
        shutdown_grace: float = 5.0,
        max_batch: int = 1000,
    ) -> None:
        self._definitions: dict[tuple[str, int], Saga[Any]] = {}
        for definition in sagas:
            if not isinstance(definition, Saga):
                raise TypeError(f"sagas must be Saga definitions, got {definition!r}")
            key = (definition.name, definition.version)
            if key in self._definitions:
                raise ValueError(
                    f"two definitions of {definition.name!r} version {definition.version}"
                )
            self._definitions[key] = definition
        if not isinstance(max_payload_bytes, int) or max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes must be a positive int, got {max_payload_bytes!r}")
        if not isinstance(max_recoveries, int) or max_recoveries < 1:
            raise ValueError(f"max_recoveries must be a positive int, got {max_recoveries!r}")
        self.store: Store = open_store(url, durability=durability, max_batch=max_batch)
        self.url = url
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.max_payload_bytes = max_payload_bytes
        self.max_recoveries = max_recoveries
        self._grace = shutdown_grace
        self._observers = tuple(observers)
        self._observer_calls: dict[int, ObserverCalls] = {}
        self._decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {}
        self._actors: dict[str, Actor] = {}
        self._parked: dict[str, ErrorInfo] = {}
        self._finished: dict[str, anyio.Event] = {}
        self._all_stopped = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._exit: contextlib.AsyncExitStack | None = None
        self.timers = TimerService(self.clock, self._wake, self.store.due)
        self.closing = False
        self.transitions = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._exit is not None:
            raise RuntimeError("this Runtime is already running")
        stack = contextlib.AsyncExitStack()
        await self.store.open()
        stack.push_async_callback(self.store.close)
        try:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._stop_actors)
            await self._recover()
            self._tg.start_soon(self.timers.run)
        except BaseException:
            await stack.aclose()
            raise
        self._exit = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit = self._exit, None
        if stack is not None:
            await stack.aclose()

    async def _stop_actors(self) -> None:
        self.closing = True
        for actor in list(self._actors.values()):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                actor.mailbox.send_nowait(Close())
        with anyio.move_on_after(self._grace, shield=True):
            if self._actors:
                await self._all_stopped.wait()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    def _running(self) -> anyio.abc.TaskGroup:
        if self._tg is None or self.closing:
            raise RuntimeError("the Runtime is not running; use 'async with Runtime(...)'")
        return self._tg

    async def _recover(self) -> None:
        """Resume every non-terminal saga from its log; park the ones that cannot be."""
        recovered = parked = 0
        with_mail = await self.store.with_pending_inbox()
        async for saga_id, bodies in self.store.active_logs():
            try:
                progress = Progress.from_records([decode_record(b) for b in bodies])
                # A saved state that does not fit the state type is as unusable as a bad record.
                typed_state(progress.state, self.definition_for(progress).state)
            except (CorruptLog, DefinitionMismatch) as error:
                self._park(saga_id, error)
                parked += 1
                continue
            recovered += 1
            idle = progress.wait is not None and progress.handler is None and not progress.todo
            if idle and saga_id not in with_mail:
                continue  # stays passivated: an event, its deadline or an abort wakes it
            self._activate(saga_id, progress)
        if recovered or parked:
            logger.info("recovered %d open sagas, parked %d", recovered, parked)

    # -- what actors use ----------------------------------------------------------------------

    async def fold(self, saga_id: str) -> Progress:
        """Read and fold the saga's log."""
        bodies = await self.store.log(saga_id)
        if not bodies:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        return Progress.from_records([decode_record(b) for b in bodies])

    def definition_for(self, progress: Progress) -> Saga[Any]:
        """The registered definition that wrote this log, else `DefinitionMismatch`."""
        definition = self._definitions.get((progress.name, progress.version))
        if definition is None:
            raise DefinitionMismatch(
                f"saga {progress.saga_id!r} needs definition {progress.name!r} version "
                f"{progress.version}, which this runtime does not have"
            )
        check_definition(progress, definition)
        return definition

    def observers_for(self, saga: Saga[Any]) -> ObserverCalls:
        calls = self._observer_calls.get(id(saga))
        if calls is None:
            calls = self._observer_calls[id(saga)] = ObserverCalls(self._observers + saga.observers)
        return calls

    @property
    def observer_errors(self) -> int:
        """How many observer calls raised since this runtime was created."""
        return sum(calls.errors for calls in self._observer_calls.values())

    def decode_state(self, saga: Saga[Any], state: bytes) -> Any:
        """A fresh typed copy of an encoded state."""
        decoder = self._decoders.get(id(saga))
        if decoder is None:
            decoder = self._decoders[id(saga)] = msgspec.msgpack.Decoder(saga.state)
        return decoder.decode(state)

    def info_of(self, progress: Progress, saga: Saga[Any] | None) -> SagaInfo:
        state = progress.state if saga is None else typed_state(progress.state, saga.state)
        return progress.info(state)

    def _activate(self, saga_id: str, progress: Progress | None = None) -> None:
        actor = Actor(self, saga_id, progress)
        self._actors[saga_id] = actor
        self._running().start_soon(actor.run)

    def try_passivate(self, actor: Actor) -> bool:
        """Unregister an idle actor, unless a message reached it meanwhile."""
        if actor.mailbox.statistics().current_buffer_used:
            return False
        self.actor_stopped(actor)
        return True

    def actor_stopped(self, actor: Actor) -> None:
        if self._actors.get(actor.saga_id) is actor:
            del self._actors[actor.saga_id]
            if self.closing and not self._actors:
                self._all_stopped.set()

    def actor_failed(self, actor: Actor, error: Exception) -> None:
        saga_id = actor.saga_id
        if isinstance(error, CorruptLog | DefinitionMismatch):
            self._park(saga_id, error)
        elif isinstance(error, StoreError) and not self.closing:
            logger.error("saga %r stopped on a store error (%s); retrying in 1 s", saga_id, error)
            self.timers.arm(saga_id, self.clock.now() + 1.0)
        else:
            logger.error("saga %r stopped on an internal error", saga_id, exc_info=error)
            self._park(saga_id, error)

    def _park(self, saga_id: str, error: BaseException) -> None:
        info = ErrorInfo.from_exception(error, None)
        self._parked[saga_id] = info
        logger.warning("saga %r is parked and will not run: %s", saga_id, info)
        event = self._finished.pop(saga_id, None)
        if event is not None:
            event.set()

    def saga_finished(self, saga_id: str) -> None:
        self.timers.disarm(saga_id)
        event = self._finished.pop(saga_id, None)
        if event is not None:
            event.set()

    def _wake(self, saga_id: str) -> None:
        if self.closing:
            return
        actor = self._actors.get(saga_id)
        if actor is not None:
            actor.mailbox.send_nowait(Wake())
        elif saga_id not in self._parked:
            self._activate(saga_id)

    def _deliver(self, saga_id: str, item: InboxItem) -> None:
        actor = self._actors.get(saga_id)
        if actor is not None:
            actor.mailbox.send_nowait(item)
        elif saga_id not in self._parked and not self.closing:
            self._activate(saga_id)

    def _finished_event(self, saga_id: str) -> anyio.Event:
        event = self._finished.get(saga_id)
        if event is None:
            event = self._finished[saga_id] = anyio.Event()
        return event

    def _raise_if_parked(self, saga_id: str) -> None:
        error = self._parked.get(saga_id)
        if error is not None:
            cls = {"DefinitionMismatch": DefinitionMismatch, "CorruptLog": CorruptLog}.get(
                error.type, SagaError
            )
            raise cls(f"saga {saga_id!r} is parked: {error}")

    # -- public API ---------------------------------------------------------------------------

    def _definition(self, saga_or_name: Saga[Any] | str) -> Saga[Any]:
        if isinstance(saga_or_name, Saga):
            key = (saga_or_name.name, saga_or_name.version)
            if self._definitions.get(key) is not saga_or_name:
                raise UnknownDefinition(f"{saga_or_name!r} is not registered with this runtime")
            return saga_or_name
        check_name(saga_or_name, "saga name")
        versions = [d for (name, _), d in self._definitions.items() if name == saga_or_name]
        if not versions:
            raise UnknownDefinition(f"no saga definition named {saga_or_name!r}")
        return max(versions, key=lambda d: d.version)

    async def start(
        self, saga_or_name: Saga[Any] | str, state: msgspec.Struct, *, saga_id: str | None = None
    ) -> SagaHandle:
        """Start a saga; it is durable when this returns.

        Args:
            saga_or_name: a registered definition, or a name (its highest version).
            state: the initial state, an instance of the definition's state type.
            saga_id: the instance id; a random one when ``None``.

        Returns:
            The saga's `SagaHandle`. If ``saga_id`` exists with the same definition, its
            handle, and nothing new is started.

        Raises:
            UnknownDefinition: the definition is not registered.
            SagaExists: ``saga_id`` belongs to a saga of another definition.
            TypeError: ``state`` is not of the state type, or not encodable.
            ValueError: a bad ``saga_id``.
            PayloadTooLarge: the encoded state is over ``max_payload_bytes``.
        """
        self._running()
        definition = self._definition(saga_or_name)
        if not isinstance(state, definition.state):
            raise TypeError(
                f"state must be a {definition.state.__name__}, got {type(state).__name__}"
            )
        saga_id = uuid.uuid4().hex if saga_id is None else check_name(saga_id, "saga_id")
        encoded = encode_payload(state, "state", self.max_payload_bytes)
        now = self.clock.now()
        first = Record(seq=1, kind=Kind.SAGA_STARTED, at=now, step=None, data={
            "saga_id": saga_id, "name": definition.name, "version": definition.version,
            "steps": list(definition.step_names), "state": decode_payload(encoded),
        })  # fmt: skip
        progress = Progress(first)
        existing = await self.store.start(index_row(progress, encoded), encode_record(first))
        if existing is not None:
            if (existing.name, existing.version) != (definition.name, definition.version):
                raise SagaExists(
                    f"saga {saga_id!r} exists as {existing.name!r} version {existing.version}"
                )
            return SagaHandle(self, saga_id)
        self.transitions += 1
        calls = self.observers_for(definition)
        if calls:
            await calls.on_transition(first, self.info_of(progress, definition))
        self._activate(saga_id, progress)
        return SagaHandle(self, saga_id)

    async def send(
        self,
        saga_id: str,
        name: str,
        payload: Any = None,
        *,
        key: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Put an event in a saga's durable inbox.

        Returns once the event is committed. A waiting step whose wait matches ``name`` (and
        ``key``, if the wait gave one) receives the oldest such event; others stay buffered.

        Args:
            saga_id: the saga.
            name: the event name.
            payload: any msgspec-encodable value; delivered decoded to plain values.
            key: matched against a wait's ``key``.
            event_id: dedupe id; sending a known one again is a no-op. Random when ``None``.

        Returns:
            The event id.

        Raises:
            UnknownSaga: no saga has this id.
            SagaClosed: the saga is terminal.
            TypeError / ValueError: bad arguments or a payload msgspec cannot encode.
            PayloadTooLarge: the encoded payload is over ``max_payload_bytes``.
        """
        self._running()
        check_name(saga_id, "saga_id")
        check_name(name, "event name")
        if key is not None:
            check_name(key, "event key")
        event_id = uuid.uuid4().hex if event_id is None else check_name(event_id, "event_id")
        body = encode_payload(payload, "payload", self.max_payload_bytes)
        now = self.clock.now()
        result = await self.store.send(
            saga_id, event_id, kind="event", name=name, key=key, payload=body, sent_at=now
        )
        if result is SendResult.UNKNOWN:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        if result is SendResult.CLOSED:
            raise SagaClosed(f"saga {saga_id!r} has ended; it takes no more events")
        if result is SendResult.STORED:
            self._deliver(saga_id, InboxItem(0, saga_id, event_id, "event", name, key, body, now))
        return event_id

    async def abort(self, saga_id: str, reason: str) -> None:
        """Stop a saga where it is and compensate; durable before it returns.

        The current step counts as the failing step. A handler that is running finishes
        first; a saga already compensating or terminal is left as it is.

        Raises:
            UnknownSaga: no saga has this id.
        """
        self._running()
        check_name(saga_id, "saga_id")
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {type(reason).__name__}")
        body = encode_payload(reason, "reason", self.max_payload_bytes)
        event_id = "abort-" + uuid.uuid4().hex
        now = self.clock.now()
        result = await self.store.send(
            saga_id, event_id, kind="abort", name="abort", key=None, payload=body, sent_at=now
        )
        if result is SendResult.UNKNOWN:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        if result is SendResult.STORED:
            self._deliver(
                saga_id, InboxItem(0, saga_id, event_id, "abort", "abort", None, body, now)
            )

    async def resume(self, saga_id: str, reason: str = "operator resume") -> bool:
        """Operator action: send a ``FAILED`` saga back to ``COMPENSATING``.

        The remaining compensations run again, each with a fresh retry budget, starting
        with the one that failed.

        Returns:
            ``True`` if the saga was resumed; ``False`` if it was not ``FAILED``.

        Raises:
            UnknownSaga: no saga has this id.
            DefinitionMismatch: its definition is not registered with this runtime.
        """
        self._running()
        check_name(saga_id, "saga_id")
        progress = await self.fold(saga_id)
        if progress.status is not Status.FAILED:
            return False
        definition = self.definition_for(progress)
        record = Record(seq=progress.seq + 1, kind=Kind.SAGA_RESUMED, at=self.clock.now(),
                        step=progress.step, data={"reason": reason})  # fmt: skip
        progress.apply(record)
        state = encode_payload(progress.state, "state", math.inf)  # type: ignore[arg-type]
        append = Append(saga_id, [(record.seq, encode_record(record))], index_row(progress, state))
        if not await self.store.append_if(append, status=Status.FAILED.value):
            return False
        self.transitions += 1
        self._parked.pop(saga_id, None)
        calls = self.observers_for(definition)
        if calls:
            await calls.on_transition(record, self.info_of(progress, definition))
        self._activate(saga_id, progress)
        return True

    async def get(self, saga_id: str) -> SagaInfo:
        """The saga's current `SagaInfo`. Raises `UnknownSaga`."""
        check_name(saga_id, "saga_id")
        row = await self.store.saga(saga_id)
        if row is None:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        return self._info(row)

    async def list(
        self, *, status: Status | str | None = None, name: str | None = None, limit: int = 100
    ) -> list[SagaInfo]:
        """Sagas, newest first, optionally of one status and/or definition name."""
        if status is not None:
            try:
                status = Status(status)
            except ValueError:
                raise ValueError(f"unknown status {status!r}") from None
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        rows = await self.store.sagas(
            status=None if status is None else status.value, name=name, limit=limit
        )
        return [self._info(row) for row in rows]

    async def history(self, saga_id: str) -> builtins.list[Record]:
        """The saga's log, in order. Raises `UnknownSaga`, or `CorruptLog` on a bad record."""
        check_name(saga_id, "saga_id")
        bodies = await self.store.log(saga_id)
        if not bodies:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        return [decode_record(body) for body in bodies]

    async def dead_letters(
        self, saga_id: str | None = None, *, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Events no step consumed before their saga ended, newest first, with the reason."""
        if saga_id is not None:
            check_name(saga_id, "saga_id")
        rows = await self.store.dead_letters(saga_id, limit)
        return [_dead_letter(row) for row in rows]

    def handle(self, saga_id: str) -> SagaHandle:
        """A handle on ``saga_id`` (no I/O; the id is checked when used)."""
        return SagaHandle(self, check_name(saga_id, "saga_id"))

    def _info(self, row: SagaRow) -> SagaInfo:
        definition = self._definitions.get((row.name, row.version))
        try:
            state = (
                decode_payload(row.state)
                if definition is None
                else self.decode_state(definition, row.state)
            )
        except msgspec.ValidationError:
            # Saved by an incompatible state type (that saga is parked): show it as plain
            # values rather than fail every get and list that includes it.
            state = decode_payload(row.state)
        error = None if row.error is None else _error_decoder.decode(row.error)
        error = self._parked.get(row.saga_id, error)
        return SagaInfo(
            saga_id=row.saga_id,
            name=row.name,
            version=row.version,
            status=Status(row.status),
            step=row.step,
            state=state,
            error=error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            seq=row.seq,
        )


def _dead_letter(row: DeadLetterRow) -> DeadLetter:
    return DeadLetter(
        saga_id=row.saga_id,
        event_id=row.event_id,
        name=row.name,
        key=row.key,
        payload=decode_payload(row.payload),
        sent_at=row.sent_at,
        reason=row.reason,
    )
