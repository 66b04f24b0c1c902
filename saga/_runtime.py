"""`Runtime`: the public face of the engine.

It checks every argument and hands the call to `saga._engine.Engine`, which owns the store,
the actors and everything they share.
"""

from __future__ import annotations

import builtins
import math
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import msgspec
from opentelemetry import propagate

from saga._actor import OPERATIONS
from saga._clock import Clock, SystemClock
from saga._definition import Saga
from saga._definitions import Definitions
from saga._engine import Engine
from saga._errors import CorruptLog, InvalidTransition, SagaClosed, UnknownSaga
from saga._export import SagaExport
from saga._handle import SagaHandle
from saga._index import dead_letter
from saga._info import DeadLetter, SagaInfo, Status
from saga._observer import Observer
from saga._records import Record, decode_record, encode_payload
from saga._requests import encode_request
from saga._store import InboxKind, SendResult, Store, open_store
from saga._store._vocabulary import DURABILITIES
from saga._validate import (
    MAX_BATCH,
    MAX_PAYLOAD_BYTES,
    check_choice,
    check_int,
    check_limit,
    check_name,
    check_seconds,
)

__all__ = ["Runtime"]


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
        check_choice(durability, "durability", DURABILITIES)
        store = open_store(url, durability=durability, max_batch=max_batch)
        self.url = url
        self._engine = Engine(
            store,
            clock if clock is not None else SystemClock(),
            Definitions(definitions, observers),
            max_payload_bytes=max_payload_bytes,
            max_recoveries=max_recoveries,
            shutdown_grace=shutdown_grace,
        )

    @property
    def store(self) -> Store:
        """The store this runtime runs on."""
        return self._engine.store

    @property
    def transitions(self) -> int:
        """Records appended by this runtime since it was created."""
        return self._engine.transitions

    @property
    def observer_errors(self) -> int:
        """How many observer calls raised since this runtime was created."""
        return self._engine.definitions.observer_errors

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._engine.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._engine.close()

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
        self._engine.running()
        definition = self._engine.definitions.named(saga_or_name)
        if not isinstance(state, definition.state):
            raise TypeError(
                f"state must be a {definition.state.__name__}, got {type(state).__name__}"
            )
        generated = saga_id is None
        saga_id = uuid.uuid4().hex if saga_id is None else check_name(saga_id, "saga_id")
        encoded = encode_payload(state, "state", self._engine.max_payload_bytes)
        await self._engine.start(definition, saga_id, encoded, generated=generated)
        return SagaHandle(self._engine, saga_id)

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
        self._engine.running()
        check_name(saga_id, "saga_id")
        check_name(name, "event name")
        if key is not None:
            check_name(key, "event key")
        event_id = uuid.uuid4().hex if event_id is None else check_name(event_id, "event_id")
        body = encode_payload(payload, "payload", self._engine.max_payload_bytes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the sender's trace context, for a span link
        headers = (
            encode_payload(carrier, "headers", self._engine.max_payload_bytes) if carrier else None
        )
        result = await self._engine.put(
            saga_id, event_id, InboxKind.EVENT, name, body, key=key, headers=headers
        )
        if result is SendResult.CLOSED:
            raise SagaClosed(f"saga {saga_id!r} has ended; it takes no more events")
        return event_id

    async def abort(self, saga_id: str, reason: str, *, by: str = "api") -> None:
        """Operator action: stop a saga where it is and compensate; durable before it returns.

        The current step counts as the failing step (of a ``SUSPENDED`` saga: the step that
        failed). A handler that is running finishes first; a saga already compensating or
        terminal is left as it is. The log records ``abort_requested`` with ``reason`` and
        ``by``.

        Args:
            saga_id: the saga.
            reason: why, for the log and for ``SagaInfo.error``.
            by: who asked (a user, a service); the command line gives ``cli:user@host``.

        Raises:
            UnknownSaga: no saga has this id.
            TypeError / ValueError: a bad ``reason`` or ``by``.
        """
        self._engine.running()
        check_name(saga_id, "saga_id")
        body = encode_request(reason, by, self._engine.max_payload_bytes)
        event_id = "abort-" + uuid.uuid4().hex
        result = await self._engine.put(saga_id, event_id, InboxKind.ABORT, "abort", body)
        if result is SendResult.FORWARDED:
            # Another worker owned the saga; if it is SUSPENDED (no actor anywhere), any
            # runtime performs the abort, this one included.
            await self._engine.operate(InboxKind.ABORT, saga_id, reason, by, request=event_id)

    async def retry(self, saga_id: str, *, reason: str, by: str = "api") -> None:
        """Operator action: run a ``SUSPENDED`` saga's failed handler again, with a fresh
        retry budget. The log records ``saga_retried`` with ``reason`` and ``by``.

        Raises:
            InvalidTransition: the saga is not ``SUSPENDED`` (nothing is stored).
            UnknownSaga: no saga has this id.
            DefinitionMismatch: its definition is not registered with this runtime.
            TypeError / ValueError: a bad ``reason`` or ``by``.
        """
        await self._operate(InboxKind.RETRY, saga_id, reason, by)

    async def skip(self, saga_id: str, *, reason: str, by: str = "api") -> None:
        """Operator action: give up a ``SUSPENDED`` saga's failed step and go on with the
        next one. The log records ``step_skipped`` with ``reason`` and ``by``; a skipped
        step is never compensated.

        Raises:
            InvalidTransition: the saga is not ``SUSPENDED`` (nothing is stored).
            UnknownSaga: no saga has this id.
            DefinitionMismatch: its definition is not registered with this runtime.
            TypeError / ValueError: a bad ``reason`` or ``by``.
        """
        await self._operate(InboxKind.SKIP, saga_id, reason, by)

    async def revert(self, saga_id: str, *, reason: str, by: str = "api") -> None:
        """Operator action: undo a ``COMPLETED`` saga: every step's ``compensate`` runs, in
        reverse order; it ends ``COMPENSATED`` (or ``FAILED`` if a compensation fails for
        good). The log records ``saga_reverted`` with ``reason`` and ``by``.

        Raises:
            InvalidTransition: the saga is not ``COMPLETED`` (nothing is stored).
            UnknownSaga: no saga has this id.
            DefinitionMismatch: its definition is not registered with this runtime.
            TypeError / ValueError: a bad ``reason`` or ``by``.
        """
        await self._operate(InboxKind.REVERT, saga_id, reason, by)

    async def _operate(self, kind: str, saga_id: str, reason: str, by: str) -> None:
        self._engine.running()
        check_name(saga_id, "saga_id")
        encode_request(reason, by, self._engine.max_payload_bytes)  # the same checks as abort
        status = await self._engine.operate(kind, saga_id, reason, by)
        if status is not None:
            raise InvalidTransition(
                f"cannot {kind} saga {saga_id!r}: it is {status.value}, not {OPERATIONS[kind]}"
            )

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
        self._engine.running()
        check_name(saga_id, "saga_id")
        encode_request(reason, by, self._engine.max_payload_bytes)  # the same checks as abort
        return await self._engine.resume(saga_id, reason, by)

    async def get(self, saga_id: str) -> SagaInfo:
        """The saga's current `SagaInfo`. Raises `UnknownSaga`."""
        check_name(saga_id, "saga_id")
        return await self._engine.get(saga_id)

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
        rows = await self._engine.store.sagas(
            status=None if status is None else status.value, name=name, limit=limit
        )
        return [self._engine.info(row) for row in rows]

    async def history(self, saga_id: str) -> builtins.list[Record]:
        """The saga's log, in order. Raises `UnknownSaga`, or `CorruptLog` on a bad record."""
        check_name(saga_id, "saga_id")
        bodies = await self._engine.store.log(saga_id)
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
        rows = await self._engine.store.dead_letters(saga_id, limit)
        return [dead_letter(row) for row in rows]

    async def export(self, saga_id: str) -> SagaExport:
        """The saga's whole log as one self-contained document, for `saga.replay` elsewhere.

        Returns:
            A `SagaExport` (``to_json()`` to store it, ``SagaExport.from_json`` to read it).

        Raises:
            UnknownSaga: no saga has this id.
            CorruptLog: a record cannot be decoded.
        """
        return SagaExport.from_records(await self.history(saga_id), self._engine.clock.now())

    def handle(self, saga_id: str) -> SagaHandle:
        """A handle on ``saga_id`` (no I/O; the id is checked when used)."""
        return SagaHandle(self._engine, check_name(saga_id, "saga_id"))
