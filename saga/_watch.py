"""What a runtime does for other processes on its store, in the background.

* `watch_inbox`: other processes (the ``saga`` command line, other workers) cannot reach
  this runtime directly; they leave entries in the store's inbox, and this loop acts on
  them within `INBOX_POLL_INTERVAL` seconds, or at once where the store can announce them.
* `keep_ownership`: on a shared store, renew this worker's lease and take over the sagas
  of workers whose lease ran out.

They serve the engine (`saga._engine.Engine`) through the little of it they need (`Host`),
so that the engine can run them without the two modules importing each other.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio

from saga._errors import StoreError
from saga._info import Status
from saga._requests import decode_request
from saga._store import InboxItem, InboxKind, Store
from saga._store._vocabulary import RUNTIME_REQUESTS

__all__ = ["INBOX_POLL_INTERVAL", "Host", "keep_ownership", "take_request", "watch_inbox"]

logger = logging.getLogger("saga.runtime")

# Seconds between two looks at what other processes put in the inbox. Requests from the
# command line are promised to take effect within a second.
INBOX_POLL_INTERVAL = 0.25
# Seconds between two looks for sagas whose owner is no registered worker at all.
SWEEP_INTERVAL = 30.0


class Host(Protocol):
    """What the background duties ask of the engine they serve."""

    @property
    def store(self) -> Store: ...

    @property
    def closing(self) -> bool: ...

    def notify(self, saga_id: str) -> None:
        """The saga's inbox changed in the store behind this runtime's back."""

    async def operate(
        self, kind: str, saga_id: str, reason: str, by: str | None, *, request: str | None = None
    ) -> Status | None:
        """Perform an operator action on a saga no actor runs, consuming ``request``;
        ``None`` if done, else the status that does not allow it."""

    async def renew_lease(self, stale: int | None = None) -> None:
        """Renew this worker's lease, or register again if it ran out."""

    async def claim_orphans(self, *, sweep: bool = False) -> list[str]:
        """Take over open sagas nobody runs; their ids."""

    def take_over(self, saga_id: str) -> None:
        """Run a saga this worker just claimed."""


async def watch_inbox(engine: Host, mark: int) -> None:
    """Act on inbox entries other processes write (command-line requests, events).

    Runs until cancelled; a failing look is logged and retried at the next tick.
    """
    while True:
        await engine.store.wait_for_foreign(INBOX_POLL_INTERVAL)
        if engine.closing:
            return
        try:
            items, mark = await engine.store.foreign_inbox(mark)
            for item in items:
                await take_request(engine, item)
        except Exception as error:  # never take the runtime down; try again next tick
            logger.warning("cannot act on inbox requests: %s", error,
                           exc_info=not isinstance(error, StoreError))  # fmt: skip


async def take_request(engine: Host, item: InboxItem) -> None:
    """Hand an entry another process stored to its saga, or perform a request a runtime
    performs: resume, retry, skip, revert, or an abort of a ``SUSPENDED`` saga (which has
    no actor; an abort of any other saga goes to its actor)."""
    if engine.closing:
        return
    if item.kind not in RUNTIME_REQUESTS and item.kind != InboxKind.ABORT:
        engine.notify(item.saga_id)
        return
    by: str | None = "someone"
    try:  # a request, even an unreadable one, must never take the runtime down
        what = f"saga {item.saga_id!r}: {item.kind} request {item.event_id!r}"
        reason, by = decode_request(item.payload, what=what)
        status = await engine.operate(item.kind, item.saga_id, reason, by, request=item.event_id)
        if item.kind == InboxKind.ABORT and status is not None and not status.terminal:
            engine.notify(item.saga_id)  # an open saga: its actor takes the abort
    except Exception as error:
        logger.warning("cannot %s saga %r as requested by %s: %s", item.kind, item.saga_id,
                       by, error)  # fmt: skip


async def keep_ownership(engine: Host) -> None:
    """On a shared store: renew this worker's lease, take over dead workers' sagas.

    Runs until cancelled. When the lease was lost (this process was paused or cut off for
    longer than the lease), the store continues under a new fence; the actors still
    holding the old one are told to stop (any append of theirs fails with `LeaseLost`
    anyway), and the sagas nobody else took yet come back through the claims, under the
    new fence.
    """
    store = engine.store
    renewed = claimed = swept = anyio.current_time()
    while not engine.closing:
        await anyio.sleep(min(store.renew_interval, store.claim_interval))
        now = anyio.current_time()
        try:
            if now - renewed >= store.renew_interval:
                renewed = now
                await engine.renew_lease()
            if now - claimed >= store.claim_interval:
                claimed = now
                sweep = now - swept >= SWEEP_INTERVAL
                if sweep:
                    swept = now
                for saga_id in await engine.claim_orphans(sweep=sweep):
                    engine.take_over(saga_id)
        except StoreError as error:  # the database may be back next tick
            logger.warning("cannot keep this worker's lease and claims: %s", error)
