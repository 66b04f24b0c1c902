"""The engine: a runtime's store, its definitions, its actors, recovery and parking.

`Runtime` is the public face: it checks arguments and calls the `Engine`, which owns
everything that lives while the runtime runs: the registry of actors (one per active
saga), the sagas parked or handed back, whoever waits for a saga's end, the timers and the
background duties. Records are built and committed by the actors alone (`saga._actor`),
starting and resuming included; an actor sees the engine only as an `ActorHost`.

What other processes on the same store ask of this runtime, and keeping a worker's lease
on a shared store, live in `saga._watch`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import msgspec

from saga._actor import OPERATIONS, Actor, Close, Message, Refresh, Wake
from saga._clock import Clock
from saga._definition import Saga
from saga._definitions import Definitions
from saga._errors import (
    CorruptLog,
    DefinitionMismatch,
    LeaseLost,
    SagaError,
    SagaExists,
    StoreError,
    UnknownSaga,
)
from saga._fold import Progress, typed_state
from saga._index import info_from_row
from saga._info import ErrorInfo, SagaInfo, Status
from saga._records import decode_stored_record
from saga._store import InboxItem, InboxKind, SagaRow, SendResult, Store
from saga._store._base import CLAIM_BATCH
from saga._store._vocabulary import RUNTIME_REQUESTS
from saga._timers import TimerService
from saga._watch import keep_ownership, take_request, watch_inbox

__all__ = ["Engine", "Finished"]

logger = logging.getLogger("saga.runtime")


class Finished:
    """A saga's end, awaited: ``info`` is its final `SagaInfo` if the actor reported it."""

    __slots__ = ("event", "info")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.info: SagaInfo | None = None


def fold_log(saga_id: str, bodies: list[bytes]) -> Progress:
    """Decode and fold a saga's stored log. Raises `CorruptLog` naming the saga."""
    try:
        return Progress.from_records([decode_stored_record(body) for body in bodies])
    except CorruptLog as error:
        raise CorruptLog(f"the log of saga {saga_id!r} cannot be used: {error}") from None


class Engine:
    """What a `Runtime` runs on: its store, definitions and actors, and their bookkeeping."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        definitions: Definitions,
        *,
        max_payload_bytes: int,
        max_recoveries: int,
        shutdown_grace: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.definitions = definitions
        self.max_payload_bytes = max_payload_bytes
        self.max_recoveries = max_recoveries
        self._grace = shutdown_grace
        self._actors: dict[str, Actor] = {}
        self._parked: dict[str, ErrorInfo] = {}
        self._handed_back: set[str] = set()  # sagas this worker cannot run, left to others
        self._refold: set[str] = set()  # sagas whose actor may have folded a stale log
        self._finished: dict[str, Finished] = {}
        self._all_stopped = anyio.Event()
        self.tg: anyio.abc.TaskGroup | None = None
        self.timers = TimerService(clock, self.wake, store.due)
        self.closing = False
        self.transitions = 0
        self._exit: contextlib.AsyncExitStack | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store, recover every open saga, start the timers and background duties.

        Raises:
            RuntimeError: it is running already.
        """
        if self._exit is not None:
            raise RuntimeError("this Runtime is already running")
        stack = contextlib.AsyncExitStack()
        await self.store.open()
        stack.push_async_callback(self.store.close)
        try:
            tg = self.tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self.stop_actors)
            mark = await self.recover()
            tg.start_soon(self.timers.run)
            tg.start_soon(watch_inbox, self, mark)
            if self.store.shared:
                tg.start_soon(keep_ownership, self)
        except BaseException:
            await stack.aclose()
            raise
        self._exit = stack

    async def close(self) -> None:
        """Let running handlers finish (for the shutdown grace), stop, close the store."""
        stack, self._exit = self._exit, None
        if stack is not None:
            await stack.aclose()

    async def stop_actors(self) -> None:
        self.closing = True
        for actor in list(self._actors.values()):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                actor.mailbox.send_nowait(Close())
        with anyio.move_on_after(self._grace, shield=True):
            if self._actors:
                await self._all_stopped.wait()
        assert self.tg is not None
        self.tg.cancel_scope.cancel()

    def running(self) -> anyio.abc.TaskGroup:
        if self.tg is None or self.closing:
            raise RuntimeError("the Runtime is not running; use 'async with Runtime(...)'")
        return self.tg

    # -- recovery and ownership ---------------------------------------------------------------

    async def recover(self) -> int:
        """Resume every non-terminal saga from its log; park the ones that cannot be.

        Also acts on the requests a runtime performs (resume, retry, skip, revert, an abort
        of a ``SUSPENDED`` saga) left while no runtime ran. A ``SUSPENDED`` saga is not
        open: it stays as it is.

        Returns:
            The inbox mark `watch_inbox` starts from: recovery covered everything before it.
        """
        mark = await self.store.inbox_mark()
        if self.store.shared:  # open sagas nobody runs become this one's to resume
            while len(await self.claim_orphans(sweep=True)) == CLAIM_BATCH:
                pass  # a full batch: there may be more
        mail = await self._pending_mail()
        requests: list[InboxItem] = []
        for kind in RUNTIME_REQUESTS:
            requests += await self.store.pending_inbox(kind)
        # Fold everything first, then activate: actors that started while logs still
        # stream would compete with the streaming for the event loop and the store.
        folded: list[Progress] = []
        parked = 0
        async for saga_id, bodies in self.store.active_logs():
            try:
                progress = fold_log(saga_id, bodies)
                # A saved state that does not fit the state type is as unusable as a bad record.
                typed_state(progress.state, self.definitions.definition_for(progress).state)
            except (CorruptLog, DefinitionMismatch) as error:
                self.park(saga_id, error)
                parked += 1
                continue
            folded.append(progress)
        # No await from here until every actor is started, so none runs before recovery
        # has handed out all the work.
        for progress in folded:
            saga_id = progress.saga_id
            items = mail.get(saga_id, [])
            idle = progress.wait is not None and progress.handler is None and not progress.todo
            if idle and not items:
                continue  # stays passivated: an event, its deadline or an abort wakes it
            self.activate(saga_id, progress, inbox=items)  # the actor need not read its inbox
        if folded or parked:
            logger.info("recovered %d open sagas, parked %d", len(folded), parked)
        # An abort left for a saga not open here may be for a SUSPENDED one: a runtime's.
        opened = {progress.saga_id for progress in folded}
        for saga_id, items in mail.items():
            aborts = [item for item in items if item.kind == InboxKind.ABORT]
            if aborts and saga_id not in opened:
                row = await self.store.saga(saga_id)
                if row is not None and row.status == Status.SUSPENDED.value:
                    requests += aborts
        requests.sort(key=lambda item: item.id)
        for item in requests:
            await take_request(self, item)
        return mark

    async def claim_orphans(self, *, sweep: bool = False) -> list[str]:
        """Take over open sagas nobody runs, of the definitions this runtime has."""
        return await self.store.claim_orphans(
            self.definitions.keys, exclude=self._handed_back, sweep=sweep
        )

    async def renew_lease(self, stale: int | None = None) -> None:
        """Renew this worker's lease, or register again if it ran out.

        ``stale`` is a fence a write was just refused under: if the store has moved on
        from it already, there is nothing to do. On a new fence, the actors still writing
        under the old one are told to stop; their sagas come back through the claims.
        """
        if stale is not None and self.store.fence != stale:
            return
        if not await self.store.keep_lease():
            self.stop_stale_actors()

    async def _pending_mail(self) -> dict[str, list[InboxItem]]:
        """Every saga's pending events and aborts, oldest first: two reads for all sagas.

        Entries committed after `recover` took its inbox mark may be here too; the
        actors are told of them again by `watch_inbox`, and never take one twice.
        """
        items = await self.store.pending_inbox(InboxKind.EVENT)
        items += await self.store.pending_inbox(InboxKind.ABORT)
        items.sort(key=lambda item: item.id)
        mail: dict[str, list[InboxItem]] = {}
        for item in items:
            mail.setdefault(item.saga_id, []).append(item)
        return mail

    # -- starting and resuming: an actor writes the first records, then runs ------------------

    async def start(
        self, saga: Saga[Any], saga_id: str, state: bytes, *, generated: bool = False
    ) -> None:
        """Create a saga and run it; it is durable when this returns.

        The saga's actor writes ``saga_started`` and the first step's ``step_started`` in
        one commit, under a live lease (`Actor.create`), then runs the first handler. An id
        that exists with the same definition is left as it is.

        Args:
            saga: a registered definition.
            saga_id: the new saga's id.
            state: the initial state, encoded.
            generated: ``saga_id`` was just made up at random, so it cannot exist yet.

        Raises:
            SagaExists: ``saga_id`` belongs to a saga of another definition.
        """
        calls = self.definitions.observers_for(saga)
        annotations: Mapping[str, str] = {}
        if calls:
            # A repeated start must not make observers emit anything (e.g. a stray span).
            # A random id is new: only a given one needs the look.
            known = None if generated else await self.store.saga(saga_id)
            if known is not None:
                return _same_definition(saga, known)
            annotations = await calls.on_start(saga_id, saga.name, saga.version)
        actor = Actor(self, saga_id)
        try:
            existing = await actor.create(saga, state, annotations)
        except BaseException:
            actor.discard()
            raise
        if existing is not None:
            actor.discard()
            return _same_definition(saga, existing)
        await self._hand_over(actor)

    async def resume(
        self, saga_id: str, reason: str, by: str | None, *, request: str | None = None
    ) -> bool:
        """Send a ``FAILED`` saga back to compensating; ``False`` if it is not ``FAILED``."""
        return await self.operate(InboxKind.RESUME, saga_id, reason, by, request=request) is None

    async def operate(
        self, kind: str, saga_id: str, reason: str, by: str | None, *, request: str | None = None
    ) -> Status | None:
        """Perform an operator action on a saga no actor runs (`Actor.operate`).

        ``resume`` needs it ``FAILED``, ``retry``, ``skip`` and ``abort`` ``SUSPENDED``,
        ``revert`` ``COMPLETED``. ``request`` is the inbox entry asking for it, consumed in
        the same commit. The saga becomes this worker's (shared stores) and runs here.

        Returns:
            ``None`` if it was done; else the status that does not allow it (nothing was
            stored).
        """
        progress = await self.fold(saga_id)
        if progress.status.value != OPERATIONS[kind]:
            return progress.status
        actor = Actor(self, saga_id, progress)
        try:
            done = await actor.operate(kind, reason, by, request)
        except BaseException:
            actor.discard()
            raise
        if not done:
            actor.discard()
            return (await self.fold(saga_id)).status
        self.unpark(saga_id)
        await self._hand_over(actor)
        return None

    def perform(self, item: InboxItem) -> None:
        """Perform an operator request in the background (`take_request`)."""
        if self.tg is not None and not self.closing:
            self.tg.start_soon(take_request, self, item)

    async def _hand_over(self, actor: Actor) -> None:
        """Run an actor whose first records are committed.

        It is registered at once and run after the observers saw those records: a message
        sent meanwhile waits in its mailbox, and the observers see the commit before
        anything that follows it.
        """
        adopted = actor.saga_id not in self._actors  # else another actor took the saga
        if adopted:
            self._actors[actor.saga_id] = actor
        try:
            await actor.announce()
        finally:
            if not adopted:
                # The actor there (woken by an event, say) may have folded the log before
                # this commit and will see nothing to do: once it stops, a fresh actor
                # folds the log again, so the commit is acted on.
                actor.discard()
                self._refold.add(actor.saga_id)
            elif self._actors.get(actor.saga_id) is actor:
                self.running().start_soon(actor.run)

    # -- messages from this runtime's callers -------------------------------------------------

    async def put(
        self,
        saga_id: str,
        event_id: str,
        kind: str,
        name: str,
        payload: bytes,
        *,
        key: str | None = None,
        headers: bytes | None = None,
    ) -> SendResult:
        """Store an inbox entry sent now; hand it to the saga's actor if the saga is ours.

        Raises:
            UnknownSaga: no saga has this id.
        """
        item = InboxItem(0, saga_id, event_id, kind, name, key, payload, self.clock.now(), headers)
        result = await self.store.send(
            saga_id, event_id, kind=kind, name=name, key=key, payload=payload,
            sent_at=item.sent_at, headers=headers,
        )  # fmt: skip
        if result is SendResult.UNKNOWN:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        if result is SendResult.STORED:
            self._hand(saga_id, item)  # the saga's actor takes it (or one is started)
        return result

    # -- the actors: registry, messages, parking, ends ----------------------------------------

    async def fold(self, saga_id: str) -> Progress:
        """Read and fold the saga's log."""
        bodies = await self.store.log(saga_id)
        if not bodies:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        return fold_log(saga_id, bodies)

    def activate(
        self,
        saga_id: str,
        progress: Progress | None = None,
        *,
        inbox: list[InboxItem] | None = None,
    ) -> None:
        actor = Actor(self, saga_id, progress, inbox)
        self._actors[saga_id] = actor
        self.running().start_soon(actor.run)

    def try_passivate(self, actor: Actor) -> bool:
        """Unregister an idle actor, unless a message reached it meanwhile."""
        if actor.mailbox.statistics().current_buffer_used:
            return False
        self.actor_stopped(actor)
        return True

    def actor_stopped(self, actor: Actor) -> None:
        saga_id = actor.saga_id
        if self._actors.get(saga_id) is actor:
            del self._actors[saga_id]
            if saga_id in self._refold:  # see `_hand_over`
                self._refold.discard(saga_id)
                if self._may_run(saga_id):
                    self.activate(saga_id)
                    return
            self._release(saga_id)  # stopped without an end: whoever waits asks the store
            if self.closing and not self._actors:
                self._all_stopped.set()

    def actor_failed(self, actor: Actor, error: Exception) -> None:
        saga_id = actor.saga_id
        if isinstance(error, LeaseLost):
            logger.info("saga %r: %s; this worker leaves it", saga_id, error)
            if self._actors.get(saga_id) is actor:
                self.timers.disarm(saga_id)
        elif isinstance(error, CorruptLog | DefinitionMismatch):
            self.park(saga_id, error)
        elif isinstance(error, StoreError) and not self.closing:
            logger.error("saga %r stopped on a store error (%s); retrying in 1 s", saga_id, error)
            self.timers.arm(saga_id, self.clock.now() + 1.0)
        else:
            logger.error("saga %r stopped on an internal error", saga_id, exc_info=error)
            self.park(saga_id, error)

    def unpark(self, saga_id: str) -> None:
        self._parked.pop(saga_id, None)
        self._handed_back.discard(saga_id)

    def park(self, saga_id: str, error: BaseException) -> None:
        """Leave a saga this runtime cannot run as it is, and say so to every reader.

        The reason is stored with the saga (``saga list`` and ``show`` in any process
        show it). On a shared store, a saga whose definition this worker lacks or has
        otherwise is handed back for a worker that has it (and never claimed here again).
        """
        info = ErrorInfo.from_exception(error, None)
        release = self.store.shared and isinstance(error, DefinitionMismatch)
        if release:
            self._handed_back.add(saga_id)
            self.timers.disarm(saga_id)
            logger.warning("saga %r is handed back for a worker that can run it: %s",
                           saga_id, info)  # fmt: skip
        else:
            self._parked[saga_id] = info
            logger.warning("saga %r is parked and will not run: %s", saga_id, info)
        self._release(saga_id)
        if self.tg is not None and not self.closing:
            encoded = msgspec.msgpack.encode(info)
            self.tg.start_soon(self._store_park, saga_id, encoded, release)

    async def _store_park(self, saga_id: str, error: bytes, release: bool) -> None:
        try:
            await self.store.park(saga_id, error, release=release, fence=self.store.fence)
        except Exception as problem:  # the saga stays parked here all the same
            logger.warning("cannot record that saga %r is parked: %s", saga_id, problem)

    def saga_finished(self, saga_id: str, final: Callable[[], SagaInfo] | None = None) -> None:
        """The saga ended; ``final`` gives its `SagaInfo` to whoever waits for that."""
        self.timers.disarm(saga_id)
        self._release(saga_id, final)

    def _release(self, saga_id: str, final: Callable[[], SagaInfo] | None = None) -> None:
        """Wake whoever waits for the saga's end, with its final info if ``final`` gives it."""
        waiter = self._finished.pop(saga_id, None)
        if waiter is not None:
            waiter.info = None if final is None else final()
            waiter.event.set()

    def wake(self, saga_id: str) -> None:
        """A deadline of the saga may have passed."""
        self._hand(saga_id, Wake())

    def notify(self, saga_id: str) -> None:
        """The saga's inbox changed in the store behind this runtime's back."""
        self._hand(saga_id, Refresh())

    def _hand(self, saga_id: str, message: Message) -> None:
        """Give the saga's actor ``message``; with no actor, start one (it reads the store)."""
        actor = self._actors.get(saga_id)
        if actor is not None:
            actor.mailbox.send_nowait(message)
        elif self._may_run(saga_id):
            self.activate(saga_id)

    def take_over(self, saga_id: str) -> None:
        """Run a saga this worker just claimed (an actor under an old fence is replaced)."""
        if self._may_run(saga_id):
            self.activate(saga_id)

    def _may_run(self, saga_id: str) -> bool:
        return not (self.closing or saga_id in self._parked or saga_id in self._handed_back)

    def stop_stale_actors(self) -> None:
        """Tell every actor writing under a fence other than the store's to stop."""
        for actor in list(self._actors.values()):
            if actor.fence != self.store.fence:
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    actor.mailbox.send_nowait(Close())

    # -- what handles and readers ask ---------------------------------------------------------

    def finished_waiter(self, saga_id: str) -> Finished:
        """What `SagaHandle.result` waits on: set when the saga ends or is parked here."""
        waiter = self._finished.get(saga_id)
        if waiter is None:
            waiter = self._finished[saga_id] = Finished()
        return waiter

    def is_active(self, saga_id: str) -> bool:
        """Whether an actor of this runtime runs the saga: it reports its end or its stop."""
        return saga_id in self._actors

    def raise_if_parked(self, info: SagaInfo) -> None:
        """Raise why the saga is parked (by this runtime or, as its row says, another)."""
        error = info.error
        if info.parked and error is not None:
            cls = {"DefinitionMismatch": DefinitionMismatch, "CorruptLog": CorruptLog}.get(
                error.type, SagaError
            )
            raise cls(f"saga {info.saga_id!r} is parked: {error}")

    async def get(self, saga_id: str) -> SagaInfo:
        """The saga's `SagaInfo`, from its index row. Raises `UnknownSaga`."""
        row = await self.store.saga(saga_id)
        if row is None:
            raise UnknownSaga(f"no saga with id {saga_id!r}")
        return self.info(row)

    def info(self, row: SagaRow) -> SagaInfo:
        """An index row as a `SagaInfo`: the state typed if its definition is here."""
        definition = self.definitions.get(row.name, row.version)
        state = None  # plain values, unless the definition is here to type them
        if definition is not None:
            # A state saved by an incompatible type (that saga is parked) stays plain
            # rather than fail every get and list that includes it.
            with contextlib.suppress(CorruptLog):  # garbage: reported just below
                state = self.definitions.decode_state(definition, row.state)
        return info_from_row(row, state=state, error=self._parked.get(row.saga_id))


def _same_definition(saga: Saga[Any], row: SagaRow) -> None:
    """A start of an id that exists starts nothing; with another definition it is an error."""
    if (row.name, row.version) != (saga.name, saga.version):
        raise SagaExists(f"saga {row.saga_id!r} exists as {row.name!r} version {row.version}")
