"""Book three trips at once and print what happened to each.

Each trip is a saga of two steps: reserve a hotel, then wait for the payment. One payment
succeeds, one is declined (so the hotel is cancelled again), and one never comes: after a
1-second timeout that trip is undone too. Everything is recorded in ``trips.db`` (SQLite,
in the current directory), so you can look at it afterwards.

Run it with ``python examples/trip_booking.py``.
"""

from __future__ import annotations

import os

import anyio
import msgspec

import saga

DB = "trips.db"


# -- stand-ins for the outside world -----------------------------------------------------------


class Hotels:
    """A pretend hotel API. Like a good real one, it takes an idempotency key: a repeated
    call with the same key (a retry, a re-run after a crash) books no second room."""

    def __init__(self) -> None:
        self.rooms: dict[str, str] = {}  # idempotency key -> room

    async def reserve(self, key: str) -> str:
        return self.rooms.setdefault(key, f"room-{101 + len(self.rooms)}")

    async def cancel(self, room: str) -> None:
        self.rooms = {key: booked for key, booked in self.rooms.items() if booked != room}


hotels = Hotels()


# -- the saga ---------------------------------------------------------------------------------


class Trip(msgspec.Struct):  # the saga's state: saved in the log after every step
    trip_id: str
    hotel: str | None = None
    paid: bool = False


class PaymentDeclined(Exception):
    pass


class ReserveHotel(saga.Step):
    retry = saga.RetryPolicy(max_attempts=3, initial_interval=0.2)

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        # The key is the same on every retry and after a crash: the hotel books one room.
        ctx.state.hotel = await hotels.reserve(key=ctx.idempotency_key)

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        if ctx.state.hotel is not None:  # an undo must cope with a half-done step
            await hotels.cancel(ctx.state.hotel)
            ctx.state.hotel = None


class AwaitPayment(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        # Continue later: when a "payment.settled" event for this trip arrives, or after 1 s.
        return saga.wait_for("payment.settled", key=ctx.state.trip_id, timeout=1.0)

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        if event.payload["ok"] is not True:
            raise PaymentDeclined(event.payload["reason"])  # -> compensation
        ctx.state.paid = True

    # No on_timeout: by default a timeout raises saga.StepTimeout -> compensation.


book_trip = saga.Saga("book-trip", state=Trip, steps=[ReserveHotel(), AwaitPayment()])


# -- running it --------------------------------------------------------------------------------


async def payment_provider(runtime: saga.Runtime) -> None:
    """Answers a little later, as a payment webhook would. trip-silent never hears back."""
    await anyio.sleep(0.2)
    await runtime.send("trip-ok", "payment.settled", {"ok": True}, key="trip-ok")
    await runtime.send(
        "trip-declined", "payment.settled", {"ok": False, "reason": "card expired"},
        key="trip-declined",
    )  # fmt: skip


def detail(record: saga.Record) -> str:
    """The one thing worth knowing about a record, read from its typed body."""
    match record.body:
        case saga.StepStarted(handler=handler, attempt=attempt):
            return f"{handler} (attempt {attempt})"
        case saga.StepWaiting(event=event, timeout=timeout):
            return f"waits for {event!r}, timeout {timeout} s"
        case saga.EventDelivered(event=event):
            return f"payload {event.payload}"
        case saga.StepFailed(error=error):
            return str(error)
        case saga.CompensationStarted(steps=steps):
            return f"undo {', '.join(steps)}"
        case saga.SagaStarted(state=state) | saga.StepCompleted(state=state):
            return "state: " + ", ".join(f"{k}={v!r}" for k, v in state.items() if k != "trip_id")
    return ""


async def print_timeline(runtime: saga.Runtime, handle: saga.SagaHandle) -> None:
    info = await handle.result(timeout=10)  # waits until the saga has ended
    why = f"  ({info.error})" if info.error else ""
    print(f"\n{info.saga_id}: {info.status}{why}")
    print(f"  seq  time  {'kind':<25} {'step':<12} detail")
    records = await runtime.history(info.saga_id)  # the saga's log, in order
    for r in records:
        direction = "undo" if isinstance(r.body, saga.StepBody) and r.body.compensating else ""
        line = (f"  {r.seq:>2} {r.at - records[0].at:5.2f}s  {r.kind:<20} {direction:<4} "
                f"{r.step or '':<12} {detail(r)}")  # fmt: skip
        print(line.rstrip())


async def main() -> None:
    for leftover in (DB, DB + "-wal", DB + "-shm"):  # start from scratch on every run
        if os.path.exists(leftover):
            os.remove(leftover)

    async with saga.Runtime(f"sqlite:///{DB}", sagas=[book_trip]) as runtime:
        # start() returns once the saga is durably recorded; it then runs in the background.
        handles = [
            await runtime.start(book_trip, Trip(trip_id=trip_id), saga_id=trip_id)
            for trip_id in ("trip-ok", "trip-declined", "trip-silent")
        ]
        await payment_provider(runtime)
        for handle in handles:
            await print_timeline(runtime, handle)
    print(f"\nrooms still booked: {sorted(hotels.rooms.values())}")


if __name__ == "__main__":
    anyio.run(main)
