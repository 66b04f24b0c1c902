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
from opentelemetry import propagate

from saga._actor import Actor
from saga._bodies import SagaStarted
from saga._clock import Clock, SystemClock
from saga._core import Core
from saga._definition import Saga
from saga._errors import CorruptLog, LeaseLost, SagaClosed, SagaExists, UnknownSaga
from saga._export import SagaExport
from saga._fold import Progress
from saga._handle import SagaHandle
from saga._index import dead_letter, index_row
from saga._info import DeadLetter, SagaInfo, Status
from saga._observer import Observer
from saga._records import Record, decode_record, encode_payload, encode_record, new_record
from saga._requests import encode_request
from saga._store import InboxItem, InboxKind, SagaRow, SendResult, Store, open_store
from saga._validate import (
    MAX_BATCH,
    MAX_PAYLOAD_BYTES,
    check_choice,
    check_int,
    check_limit,
    check_name,
    check_seconds,
)
from saga._watch import keep_ownership, watch_inbox

__all__ = ["Runtime"]

logger = logging.getLogger("saga.runtime")

_START_ATTEMPTS = 3  # a start refused for a lost lease is tried again under a new one


class Runtime:
    """Runs sagas on a store. Use it as ``async with Runtime(url, sagas=[...]) as runtime``.

    Entering opens the store, creates its schema and recovers every saga that is not
    terminal; leaving lets running handlers finish (up to ``shutdown_grace`` seconds) and
    closes the store. A handler still running after that is cancelled and, like after a
    crash, runs again on the next start.

    Args:
        url: ``sqlite:///path.db`` (default ``sqlite:///saga.db``), ``sqlite:///:memory:``,
            or ``postgresql://user@host:port/db?schema=saga`` for many workers on one
            database (see the README, "Running many workers").
        sagas: the definitions this runtime runs; several versions of one name may coexist.
        observers: `Observer` instances called for every saga.
        clock: the time source (default the system clock; ``saga.testing.FakeClock`` in tests).
        durability: ``"full"`` (default) or ``"normal"`` (SQLite ``synchronous=NORMAL``;
            PostgreSQL ``synchronous_commit=off``).
        max_payload_bytes: the largest encoded state or event payload accepted, from 1
            to 268,435,456 (256 MiB).
        max_recoveries: interrupted runs of one handler after which it counts as failed
            (an int >= 1).
        shutdown_grace: seconds handlers get to finish when the runtime exits (>= 0;
            ``math.inf`` waits for them however long they take).
        max_batch: most writes committed in one transaction, from 1 to 100,000.

    Raises:
        ValueError: two definitions with the same name and version, or a bad option
            (out of range, NaN, an unknown durability).
        TypeError: an option of the wrong type (a bool is not a number here).
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
        definitions: dict[tuple[str, int], Saga[Any]] = {}
        for definition in sagas:
            if not isinstance(definition, Saga):
                raise TypeError(f"sagas must be Saga definitions, got {definition!r}")
            key = (definition.name, definition.version)
            if key in definitions:
                raise ValueError(
                    f"two definitions of {definition.name!r} version {definition.version}"
                )
            definitions[key] = definition
        check_int(max_payload_bytes, "max_payload_bytes", 1, MAX_PAYLOAD_BYTES)
        check_int(max_recoveries, "max_recoveries", 1)
        shutdown_grace = check_seconds(shutdown_grace, "shutdown_grace", high=math.inf)
        check_int(max_batch, "max_batch", 1, MAX_BATCH)
        check_choice(durability, "durability", ("full", "normal"))
        store = open_store(url, durability=durability, max_batch=max_batch)
        self.url = url
        self._core = Core(
            store,
            clock if clock is not None else SystemClock(),
            definitions,
            observers,
            max_payload_bytes=max_payload_bytes,
            max_recoveries=max_recoveries,
            shutdown_grace=shutdown_grace,
        )
        self._exit: contextlib.AsyncExitStack | None = None

    @property
    def store(self) -> Store:
        """The store this runtime runs on."""
        return self._core.store

    @property
    def transitions(self) -> int:
        """Records appended by this runtime since it was created."""
        return self._core.transitions

    @property
    def observer_errors(self) -> int:
        """How many observer calls raised since this runtime was created."""
        return self._core.observer_errors

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._exit is not None:
            raise RuntimeError("this Runtime is already running")
        core = self._core
        stack = contextlib.AsyncExitStack()
        await core.store.open()
        stack.push_async_callback(core.store.close)
        try:
            core.tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(core.stop_actors)
            mark = await core.recover()
            core.tg.start_soon(core.timers.run)
            core.tg.start_soon(watch_inbox, core, mark)
            if core.store.shared:
                core.tg.start_soon(keep_ownership, core)
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

    # -- public API ---------------------------------------------------------------------------

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
        self._core.running()
        definition = self._core.definition(saga_or_name)
        if not isinstance(state, definition.state):
            raise TypeError(
                f"state must be a {definition.state.__name__}, got {type(state).__name__}"
            )
        generated = saga_id is None
        saga_id = uuid.uuid4().hex if saga_id is None else check_name(saga_id, "saga_id")
        encoded = encode_payload(state, "state", self._core.max_payload_bytes)
        calls = self._core.observers_for(definition)
        annotations: dict[str, str] = {}
        if calls:
            # A repeated start must not make observers emit anything (e.g. a stray span).
            # A random id is new: only a given one needs the look.
            known = None if generated else await self._core.store.saga(saga_id)
            if known is not None:
                return self._existing(definition, known)
            annotations = await calls.on_start(saga_id, definition.name, definition.version)
        started = SagaStarted(saga_id=saga_id, name=definition.name, version=definition.version,
                              steps=list(definition.step_names), state=msgspec.Raw(encoded),
                              annotations=annotations)  # fmt: skip
        for attempt in range(_START_ATTEMPTS):
            now = self._core.clock.now()
            first = new_record(started, seq=1, at=now, step=None)
            progress = Progress(first)
            actor = Actor(self._core, saga_id, progress)
            try:
                # The first step's step_started goes into the start's commit: one commit.
                records = actor.begin(first, encoded)
                row = index_row(progress, encoded)  # after the first step's start
                bodies = [(r.seq, encode_record(r)) for r in records]
                existing = await self._core.store.start(row, bodies, fence=actor.fence)
            except LeaseLost:
                # This worker was paused or cut off past its lease: a saga created under it
                # would belong to a worker the others may have given up for dead. Nothing
                # was written; register again and start it under the new lease.
                actor.discard()
                if attempt + 1 == _START_ATTEMPTS:
                    raise
                await self._core.renew_lease(stale=actor.fence)
                continue
            except BaseException:
                actor.discard()
                raise
            break
        if existing is not None:
            actor.discard()
            return self._existing(definition, existing)
        self._core.transitions += len(records)
        # Registered at once, run after the observers: an event sent meanwhile waits in
        # its mailbox, and observers see the start's records before the first step.
        adopted = self._core.adopt(actor)  # else another actor took the saga meanwhile
        try:
            await actor.announce(records)
        finally:
            if adopted:
                self._core.launch(actor)
            else:  # pragma: no cover - that actor folds the log and runs the first step
                actor.discard()
        return SagaHandle(self, saga_id)

    def _existing(self, definition: Saga[Any], row: SagaRow) -> SagaHandle:
        """``start`` of an id that exists: its handle if the definition matches."""
        if (row.name, row.version) != (definition.name, definition.version):
            raise SagaExists(f"saga {row.saga_id!r} exists as {row.name!r} version {row.version}")
        return SagaHandle(self, row.saga_id)

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
        self._core.running()
        check_name(saga_id, "saga_id")
        check_name(name, "event name")
        if key is not None:
            check_name(key, "event key")
        event_id = uuid.uuid4().hex if event_id is None else check_name(event_id, "event_id")
        body = encode_payload(payload, "payload", self._core.max_payload_bytes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the sender's trace context, for a span link
        headers = (
            encode_payload(carrier, "headers", self._core.max_payload_bytes) if carrier else None
        )
        now = self._core.clock.now()
        item = InboxItem(0, saga_id, event_id, InboxKind.EVENT, name, key, body, now, headers)
        if await self._put(item) is SendResult.CLOSED:
            raise SagaClosed(f"saga {saga_id!r} has ended; it takes no more events")
        return event_id

    async def _put(self, item: InboxItem) -> SendResult:
        """Store ``item`` (`UnknownSaga` if no such saga); hand it over if the saga is ours."""
        result = await self._core.store.send(
            item.saga_id, item.event_id, kind=item.kind, name=item.name, key=item.key,
            payload=item.payload, sent_at=item.sent_at, headers=item.headers,
        )  # fmt: skip
        if result is SendResult.UNKNOWN:
            raise UnknownSaga(f"no saga with id {item.saga_id!r}")
        if result is SendResult.STORED:
            self._core.deliver(item.saga_id, item)
        return result

    async def abort(self, saga_id: str, reason: str, *, by: str = "api") -> None:
        """Operator action: stop a saga where it is and compensate; durable before it returns.

        The current step counts as the failing step. A handler that is running finishes
        first; a saga already compensating or terminal is left as it is. The log records
        ``abort_requested`` with ``reason`` and ``by``.

        Args:
            saga_id: the saga.
            reason: why, for the log and for ``SagaInfo.error``.
            by: who asked (a user, a service); the command line gives ``cli:user@host``.

        Raises:
            UnknownSaga: no saga has this id.
            TypeError / ValueError: a bad ``reason`` or ``by``.
        """
        self._core.running()
        check_name(saga_id, "saga_id")
        body = encode_request(reason, by, self._core.max_payload_bytes)
        event_id = "abort-" + uuid.uuid4().hex
        now = self._core.clock.now()
        await self._put(InboxItem(0, saga_id, event_id, InboxKind.ABORT, "abort", None, body, now))

    async def resume(
        self, saga_id: str, reason: str = "operator resume", *, by: str = "api"
    ) -> bool:
        """Operator action: send a ``FAILED`` saga back to ``COMPENSATING``.

        The remaining compensations run again, each with a fresh retry budget, starting
        with the one that failed. The log records ``saga_resumed`` with ``reason`` and ``by``.

        Args:
            saga_id: the saga.
            reason: why it may continue now (what was fixed).
            by: who resumed it.

        Returns:
            ``True`` if the saga was resumed; ``False`` if it was not ``FAILED``.

        Raises:
            UnknownSaga: no saga has this id.
            DefinitionMismatch: its definition is not registered with this runtime.
            TypeError / ValueError: a bad ``reason`` or ``by``.
        """
        self._core.running()
        check_name(saga_id, "saga_id")
        encode_request(reason, by, self._core.max_payload_bytes)  # the same checks as abort
        return await self._core.resume(saga_id, reason, by)

    async def get(self, saga_id: str) -> SagaInfo:
        """The saga's current `SagaInfo`. Raises `UnknownSaga`."""
        check_name(saga_id, "saga_id")
        row = await self._core.store.saga(saga_id)
        if row is None:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        return self._core.info(row)

    async def list(
        self, *, status: Status | str | None = None, name: str | None = None, limit: int = 100
    ) -> list[SagaInfo]:
        """Sagas, newest first, optionally of one status and/or definition name.

        Args:
            status: only sagas with this status.
            name: only sagas of this definition name.
            limit: at most this many, from 1 to 100,000.

        Raises:
            TypeError / ValueError: an unknown status, a bad name, a bad limit.
        """
        if status is not None:
            try:
                status = Status(status)
            except ValueError:
                raise ValueError(f"unknown status {status!r}") from None
        if name is not None:
            check_name(name, "name")
        check_limit(limit)
        rows = await self._core.store.sagas(
            status=None if status is None else status.value, name=name, limit=limit
        )
        return [self._core.info(row) for row in rows]

    async def history(self, saga_id: str) -> builtins.list[Record]:
        """The saga's log, in order. Raises `UnknownSaga`, or `CorruptLog` on a bad record."""
        check_name(saga_id, "saga_id")
        bodies = await self._core.store.log(saga_id)
        if not bodies:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        try:
            return [decode_record(body) for body in bodies]
        except CorruptLog as error:
            raise CorruptLog(f"the log of saga {saga_id!r} cannot be read: {error}") from None

    async def dead_letters(
        self, saga_id: str | None = None, *, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Events no step consumed before their saga ended, newest first, with the reason.

        Args:
            saga_id: only this saga's; every saga's when ``None``.
            limit: at most this many, from 1 to 100,000.

        Raises:
            TypeError / ValueError: a bad ``saga_id`` or ``limit``.
        """
        if saga_id is not None:
            check_name(saga_id, "saga_id")
        check_limit(limit)
        rows = await self._core.store.dead_letters(saga_id, limit)
        return [dead_letter(row) for row in rows]

    async def export(self, saga_id: str) -> SagaExport:
        """The saga's whole log as one self-contained document, for `saga.replay` elsewhere.

        Returns:
            A `SagaExport` (``to_json()`` to store it, ``SagaExport.from_json`` to read it).

        Raises:
            UnknownSaga: no saga has this id.
            CorruptLog: a record cannot be decoded.
        """
        return SagaExport.from_records(await self.history(saga_id), self._core.clock.now())

    def handle(self, saga_id: str) -> SagaHandle:
        """A handle on ``saga_id`` (no I/O; the id is checked when used)."""
        return SagaHandle(self, check_name(saga_id, "saga_id"))
