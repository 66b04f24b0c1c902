"""A service for the command-line tests: a `Runtime` on a SQLite file, in its own process.

Usage: ``python _cli_service.py DB MODE``

``populate``  writes sagas in every interesting condition (completed, compensated after a
              decline, timed out, FAILED, waiting with a buffered event, a dead letter),
              then exits.
``serve``     runs the sagas ``hold-1``/``hold-2`` (waiting for an event that never comes)
              and ``stuck-1``/``stuck-2`` (FAILED: their refund is broken until the file
              ``DB.fixed`` exists), prints ``READY``, and runs until stdin closes.

Not a test module: pytest collects only ``test_*.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import anyio
import msgspec
from _wait import wait_until

import saga
from saga.testing import FakeClock


class Trip(msgspec.Struct):
    trip_id: str
    hotel: str | None = None
    paid: bool = False


class Declined(Exception):
    pass


FIXED = ""  # the marker file that repairs the refund service


class Reserve(saga.Step):
    compensation_retry = saga.RetryPolicy(max_attempts=1)

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.hotel = f"room-{ctx.state.trip_id}"

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        if ctx.saga_id.startswith("stuck") and not os.path.exists(FIXED):
            raise Declined("refund service down")
        ctx.state.hotel = None


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        timeouts = {"hold": None, "wait": 3600}
        timeout = timeouts.get(ctx.saga_id.partition("-")[0], 60)
        return saga.wait_for("payment.settled", key=ctx.state.trip_id, timeout=timeout)

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        if not event.payload.get("ok"):
            raise Declined(event.payload.get("why", "declined"))
        ctx.state.paid = True


TRIP = saga.Saga("book-trip", state=Trip, steps=[Reserve(), Pay()])


async def populate(url: str) -> None:
    import time

    clock = FakeClock(time.time() - 600)  # the sagas ran ten minutes ago
    async with saga.Runtime(url, sagas=[TRIP], clock=clock) as runtime:
        ids = ["ok-1", "declined-1", "late-1", "stuck-1", "wait-1"]
        for saga_id in ids:
            await runtime.start(TRIP, Trip(trip_id=saga_id), saga_id=saga_id)
            await wait_until(runtime, saga_id, saga.Status.WAITING, timeout=30)
            clock.advance(1)
        await runtime.send("ok-1", "payment.settled", {"ok": True}, key="ok-1")
        await runtime.send("declined-1", "promo", {"code": "SPRING"}, event_id="promo-1")
        await runtime.send("declined-1", "payment.settled", {"ok": False, "why": "card expired"},
                           key="declined-1")  # fmt: skip
        await runtime.send("stuck-1", "payment.settled", {"ok": False}, key="stuck-1")
        await runtime.send("wait-1", "note", {"text": "early"}, event_id="note-1")
        for saga_id in ("ok-1", "declined-1", "stuck-1"):
            await wait_until(runtime, saga_id, saga.Status.COMPLETED, saga.Status.COMPENSATED,
                             saga.Status.FAILED, timeout=30)  # fmt: skip
        clock.advance(61)  # late-1's payment never came (wait-1 started later: still waits)
        await wait_until(runtime, "late-1", saga.Status.COMPENSATED, timeout=30)


async def serve(url: str) -> None:
    async with saga.Runtime(url, sagas=[TRIP]) as runtime:
        for n in (1, 2):  # on a restart, these find the sagas there and start nothing
            await runtime.start(TRIP, Trip(trip_id=f"hold-{n}"), saga_id=f"hold-{n}")
            await runtime.start(TRIP, Trip(trip_id=f"stuck-{n}"), saga_id=f"stuck-{n}")
            if (await runtime.get(f"stuck-{n}")).status is saga.Status.RUNNING:
                await wait_until(runtime, f"stuck-{n}", saga.Status.WAITING, timeout=30)
                await runtime.send(f"stuck-{n}", "payment.settled", {"ok": False},
                                   key=f"stuck-{n}", event_id=f"decline-{n}")  # fmt: skip
        later = (saga.Status.COMPENSATING, saga.Status.COMPENSATED)  # after an operator
        for n in (1, 2):
            await wait_until(runtime, f"hold-{n}", saga.Status.WAITING, *later, timeout=30)
            await wait_until(runtime, f"stuck-{n}", saga.Status.FAILED, *later, timeout=30)
        print("READY", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin


def main(argv: list[str]) -> None:
    global FIXED
    db, mode = argv
    FIXED = db + ".fixed"
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    command: Any = {"populate": populate, "serve": serve}[mode]
    anyio.run(command, f"sqlite:///{db}")


if __name__ == "__main__":
    main(sys.argv[1:])
