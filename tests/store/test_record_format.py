"""Record format version 1 is pinned: a committed log from a real run must stay readable.

``tests/store/data/log_v1.msgpack`` is a msgpack list of the encoded records (as the store keeps
them) of one ``book-trip`` saga: a wait, a declined payment retried then failed for good,
and compensations, one of which waits for an event. It must never be regenerated to make a
test pass; a change that breaks it breaks every log users have. To rebuild it after a
deliberate, upcasted format change::

    python -m tests.store.test_record_format --regenerate
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import msgspec
import pytest

import saga
from saga._records import FORMAT_VERSION, decode_record, encode_record, new_record
from saga.testing import FakeClock

SAMPLE = Path(__file__).parent / "data" / "log_v1.msgpack"
T0 = 1_800_000_000.0


# -- the definition the sample was written by --------------------------------------------------


class Trip(msgspec.Struct):
    trip_id: str
    hotel: str | None = None
    paid: bool = False
    refunded: bool = False
    cancellation: str | None = None


class PaymentDeclined(Exception):
    pass


class ReserveHotel(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.hotel = f"hotel-for-{ctx.state.trip_id}"

    async def compensate(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        return saga.wait_for("hotel.cancelled", key=ctx.state.trip_id)

    async def on_compensation_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        ctx.state.hotel = None
        ctx.state.cancellation = event.payload["ref"]


class AwaitPayment(saga.Step):
    retry = saga.RetryPolicy(max_attempts=2, initial_interval=1.0)

    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        return saga.wait_for("payment.settled", key=ctx.state.trip_id, timeout=300)

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        if event.payload["ok"] is not True:
            raise PaymentDeclined(f"card refused: {event.payload['reason']}")
        ctx.state.paid = True

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.refunded = True


book_trip = saga.Saga("book-trip", state=Trip, steps=[ReserveHotel(), AwaitPayment()])

KINDS = [
    ("saga_started", None),
    ("step_started", "ReserveHotel"),
    ("step_completed", "ReserveHotel"),
    ("step_started", "AwaitPayment"),
    ("step_waiting", "AwaitPayment"),
    ("event_delivered", "AwaitPayment"),
    ("step_started", "AwaitPayment"),
    ("step_failed", "AwaitPayment"),  # attempt 1, retried
    ("step_started", "AwaitPayment"),
    ("step_failed", "AwaitPayment"),  # attempt 2, final
    ("compensation_started", None),
    ("step_started", "AwaitPayment"),
    ("step_completed", "AwaitPayment"),
    ("step_started", "ReserveHotel"),
    ("step_waiting", "ReserveHotel"),
    ("event_delivered", "ReserveHotel"),
    ("step_started", "ReserveHotel"),
    ("step_completed", "ReserveHotel"),
    ("saga_compensated", None),
]


def _bodies() -> list[bytes]:
    bodies = msgspec.msgpack.decode(SAMPLE.read_bytes(), type=list[bytes])
    assert bodies, "the sample log is empty"
    return bodies


# -- the pinned sample ---------------------------------------------------------------------------


def test_the_sample_decodes_as_format_version_1() -> None:
    bodies = _bodies()
    assert {msgspec.msgpack.decode(b)["v"] for b in bodies} == {FORMAT_VERSION} == {1}
    records = [decode_record(b) for b in bodies]
    assert [(r.kind, r.step) for r in records] == KINDS
    assert [r.seq for r in records] == list(range(1, len(KINDS) + 1))
    assert all(T0 <= r.at <= T0 + 1 for r in records)
    # Encoding what was decoded gives the same bytes: the layout has not moved.
    assert [encode_record(r) for r in records] == bodies


def test_the_sample_rebuilds_from_its_typed_bodies_byte_for_byte() -> None:
    # The runtime builds every record from its typed body (Record.body): the data a body
    # writes must be the data of format 1, key for key and in order.
    for body in _bodies():
        record = decode_record(body)
        rebuilt = new_record(record.body, seq=record.seq, at=record.at, step=record.step)
        assert encode_record(rebuilt) == body, record


DATA_KEYS = {
    "saga_started": {"saga_id", "name", "version", "steps", "state"},
    "step_started": {"compensating", "handler", "attempt", "recovery"},
    "step_waiting": {"compensating", "event", "key", "timeout", "deadline", "state"},
    "event_delivered": {"compensating", "event"},
    "step_completed": {"compensating", "state"},
    "step_failed": {"compensating", "handler", "attempt", "error", "retry_at", "final"},
    "compensation_started": {"error", "failed_step", "steps"},
    "saga_compensated": set(),
}


def test_the_sample_carries_the_documented_data() -> None:
    records = [decode_record(b) for b in _bodies()]
    for record in records:
        assert set(record.data) == DATA_KEYS[record.kind], record
    started, waiting, delivered = records[0].data, records[4].data, records[5].data
    retried, failed, compensating = records[7].data, records[9].data, records[10].data
    assert started == {
        "saga_id": "trip-1",
        "name": "book-trip",
        "version": 1,
        "steps": ["ReserveHotel", "AwaitPayment"],
        "state": {"trip_id": "trip-1", "hotel": None, "paid": False, "refunded": False,
                  "cancellation": None},
    }  # fmt: skip
    assert (waiting["event"], waiting["key"], waiting["timeout"], waiting["deadline"]) == (
        "payment.settled", "trip-1", 300, T0 + 300,
    )  # fmt: skip
    assert delivered["event"] == {
        "event_id": "payment-1", "name": "payment.settled", "key": "trip-1",
        "payload": {"ok": False, "reason": "insufficient funds"},
    }  # fmt: skip
    declined = {"type": "PaymentDeclined", "message": "card refused: insufficient funds"}
    assert (retried["handler"], retried["attempt"], retried["final"]) == ("on_event", 1, False)
    assert (retried["error"], retried["retry_at"]) == (declined, T0 + 1)
    assert (failed["attempt"], failed["final"], failed["retry_at"]) == (2, True, None)
    assert compensating["steps"] == ["AwaitPayment", "ReserveHotel"]
    assert compensating["failed_step"] == "AwaitPayment"
    assert [r.data["handler"] for r in records if r.kind == "step_started"] == [
        "run", "run", "on_event", "on_event", "compensate", "compensate", "on_compensation_event",
    ]  # fmt: skip
    assert [r.data["compensating"] for r in records if "compensating" in r.data] == (
        [False] * 9 + [True] * 7
    )


def test_the_sample_replays_to_its_final_state() -> None:
    records = [decode_record(b) for b in _bodies()]
    infos = [info for _, info in saga.replay(records, book_trip)]
    assert [info.seq for info in infos] == [r.seq for r in records]
    assert infos[4].status is saga.Status.WAITING
    assert infos[7].status is saga.Status.RUNNING  # a durable retry backoff
    assert infos[10].status is saga.Status.COMPENSATING
    assert infos[14].status is saga.Status.COMPENSATING  # a compensation that waits
    assert infos[14].step == "ReserveHotel"
    final = infos[-1]
    assert final.status is saga.Status.COMPENSATED
    assert final.step is None
    assert final.state == Trip(
        trip_id="trip-1", hotel=None, paid=False, refunded=True, cancellation="CX-42"
    )
    assert final.error == saga.ErrorInfo(
        type="PaymentDeclined", message="card refused: insufficient funds", step="AwaitPayment"
    )
    assert (final.created_at, final.updated_at) == (T0, T0 + 1)


def test_the_sample_refuses_another_definition() -> None:
    records = [decode_record(b) for b in _bodies()]
    renamed = saga.Saga("book-trip", state=Trip, steps=[ReserveHotel()])
    with pytest.raises(saga.DefinitionMismatch):
        list(saga.replay(records, renamed))


# -- the record itself ---------------------------------------------------------------------------


def test_a_record_round_trips() -> None:
    record = saga.Record(
        seq=7,
        kind="step_failed",
        at=T0 + 0.125,
        step="Pay",
        data={"compensating": False, "error": {"type": "E", "message": "é"}, "retry_at": None,
              "blob": b"\x00\xff", "n": [1, 2.5, True]},
    )  # fmt: skip
    body = encode_record(record)
    assert decode_record(body) == record
    assert msgspec.msgpack.decode(body)["v"] == 1


def test_fields_with_defaults_may_be_missing_and_unknown_fields_are_ignored() -> None:
    minimal = msgspec.msgpack.encode({"v": 1, "seq": 3, "kind": "saga_completed", "at": T0})
    assert decode_record(minimal) == saga.Record(seq=3, kind="saga_completed", at=T0)
    newer = msgspec.msgpack.encode(
        {"v": 1, "seq": 3, "kind": "saga_completed", "at": T0, "added_later": {"x": 1}}
    )
    assert decode_record(newer) == saga.Record(seq=3, kind="saga_completed", at=T0)


@pytest.mark.parametrize(
    "body",
    [
        msgspec.msgpack.encode({"v": 99, "seq": 1, "kind": "saga_started", "at": T0}),
        msgspec.msgpack.encode({"v": 1, "seq": "one", "kind": "saga_started", "at": T0}),
        b"\xc1",
        b"",
    ],
    ids=["unknown-version", "bad-field", "bad-msgpack", "empty"],
)
def test_an_unreadable_record_is_corrupt_log(body: bytes) -> None:
    with pytest.raises(saga.CorruptLog):
        decode_record(body)


# -- regeneration (only by hand, after a deliberate format change) -------------------------------


async def _generate() -> list[bytes]:
    """Run the saga for real on a fake clock and return its stored records."""
    clock = FakeClock(start=T0)
    async with saga.Runtime("sqlite:///:memory:", sagas=[book_trip], clock=clock) as runtime:

        async def until(kind: str, count: int = 1) -> None:
            with anyio.fail_after(10):
                while sum(r.kind == kind for r in await runtime.history("trip-1")) < count:  # noqa: ASYNC110
                    await anyio.sleep(0.005)

        handle = await runtime.start(book_trip, Trip(trip_id="trip-1"), saga_id="trip-1")
        await until("step_waiting")
        payload = {"ok": False, "reason": "insufficient funds"}
        await runtime.send("trip-1", "payment.settled", payload, key="trip-1", event_id="payment-1")
        await until("step_failed")
        clock.advance(1.0)  # the retry backoff
        await until("step_waiting", 2)
        await runtime.send("trip-1", "hotel.cancelled", {"ref": "CX-42"}, key="trip-1",
                           event_id="cancel-1")  # fmt: skip
        info = await handle.result(timeout=10)
        assert info.status is saga.Status.COMPENSATED
        return await runtime.store.log("trip-1")


@pytest.mark.anyio
async def test_the_generator_still_runs_to_the_same_end() -> None:
    # Not byte equality: the runtime may add records or fields, the sample stays as it is.
    fresh = [decode_record(b) for b in await _generate()]
    pinned = [decode_record(b) for b in _bodies()]
    *_, (_, fresh_end) = saga.replay(fresh, book_trip)
    *_, (_, pinned_end) = saga.replay(pinned, book_trip)
    assert fresh_end == pinned_end


@pytest.mark.anyio
async def test_live_records_are_the_bytes_of_their_plain_values() -> None:
    # The runtime writes a saved state as its encoding (msgspec.Raw), not re-encoded from
    # plain values: the bytes must still be exactly those of an ordinary format-1 record.
    fresh = await _generate()
    assert [encode_record(decode_record(b)) for b in fresh] == fresh
    assert sum("state" in decode_record(b).data for b in fresh) >= 5


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m tests.store.test_record_format --regenerate")
    SAMPLE.parent.mkdir(exist_ok=True)
    SAMPLE.write_bytes(msgspec.msgpack.encode(anyio.run(_generate)))
    print(f"wrote {SAMPLE} ({SAMPLE.stat().st_size} bytes)")
