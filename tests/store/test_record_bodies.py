"""The log's vocabulary: one typed body per record kind, read from `Record.data` in one place.

`Record.data` keeps the plain map of format 1; `Record.body` reads it as the Struct of its
kind. A body writes exactly the data of format 1 (its keys, their order, which optional
ones are left out) and reads back as itself, so the runtime can build records from bodies
without changing a byte on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import saga
from saga._bodies import BODIES
from saga._fold import Progress
from saga._records import (
    decode_body,
    decode_record,
    decode_stored_record,
    encode_record,
    new_record,
    plain_record,
)

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0

# Every kind's data as format 1 writes it, each optional key present.
FORMAT_1: dict[str, dict[str, Any]] = {
    "saga_started": {"saga_id": "s1", "name": "trip", "version": 2, "steps": ["A", "B"],
                     "state": {"n": 1}, "annotations": {"otel.saga_span": "00-ab-cd-01"}},
    "step_started": {"compensating": False, "handler": "run", "attempt": 1, "recovery": 2},
    "step_waiting": {"compensating": True, "event": "paid", "key": "k", "timeout": 60.0,
                     "deadline": T0 + 60, "state": {"n": 2}},
    "event_delivered": {"compensating": False, "event": {
        "event_id": "e1", "name": "paid", "key": None, "payload": {"ok": True},
        "headers": {"traceparent": "00-ab-cd-01"}}},
    "wait_timed_out": {"compensating": False},
    "step_completed": {"compensating": False, "state": {"n": 3}},
    "step_failed": {"compensating": False, "handler": "on_event", "attempt": 2,
                    "error": {"type": "Declined", "message": "no"}, "retry_at": T0 + 4,
                    "final": False},
    "step_skipped": {"compensating": False, "reason": "paid by phone", "by": "ops"},
    "abort_requested": {"reason": "stop", "by": "cli:me@host", "effective": True},
    "compensation_started": {"error": {"type": "Declined", "message": "no", "step": "B"},
                             "failed_step": "B", "steps": ["B", "A"]},
    "saga_completed": {"dead_letters": 2},
    "saga_compensated": {"dead_letters": 1},
    "saga_failed": {"error": {"type": "Boom", "message": "x", "step": "A"}, "remaining": ["A"],
                    "dead_letters": 3},
    "saga_resumed": {"reason": "fixed", "by": "api"},
    "saga_suspended": {"error": {"type": "Boom", "message": "x", "step": "B"},
                       "handler": "on_event"},
    "saga_retried": {"reason": "fixed", "by": "ops"},
    "saga_reverted": {"reason": "undo", "by": "api"},
}  # fmt: skip

# What format 1 leaves out when there is nothing to say (no annotations, headers or dead
# letters): the same data, without these keys.
LEFT_OUT = {
    "saga_started": ("annotations",),
    "saga_completed": ("dead_letters",),
    "saga_compensated": ("dead_letters",),
    "saga_failed": ("dead_letters",),
}


def record_of(kind: str, data: dict[str, Any]) -> saga.Record:
    return saga.Record(seq=2, kind=kind, at=T0, step="A", data=data)


def test_every_kind_has_one_body_and_its_string_once() -> None:
    kinds = [kind.value for kind in saga.RecordKind]
    assert set(kinds) == set(FORMAT_1) == set(BODIES)
    for kind in kinds:
        body = BODIES[kind]
        assert type(body.kind) is str  # Record.kind stays a plain str
        assert body.kind == kind == saga.RecordKind(kind)
        assert getattr(saga, body.__name__) is body
        assert issubclass(body, saga.RecordBody)


@pytest.mark.parametrize("kind", list(FORMAT_1))
def test_a_body_reads_and_writes_the_data_of_format_1(kind: str) -> None:
    record = record_of(kind, FORMAT_1[kind])
    body = record.body
    assert type(body) is BODIES[kind]
    assert record.body is body  # decoded once
    data = body.data()
    assert data == record.data
    assert list(data) == list(record.data) == list(type(body).__struct_fields__)
    rebuilt = new_record(body, seq=record.seq, at=record.at, step=record.step)
    assert rebuilt == record
    assert encode_record(rebuilt) == encode_record(record)
    assert decode_body(rebuilt) == body


@pytest.mark.parametrize("kind", list(LEFT_OUT))
def test_empty_optional_fields_are_left_out_as_format_1_does(kind: str) -> None:
    data = {k: v for k, v in FORMAT_1[kind].items() if k not in LEFT_OUT[kind]}
    body = record_of(kind, data).body
    assert body.data() == data


def test_an_event_without_headers_is_written_without_them() -> None:
    event = {k: v for k, v in FORMAT_1["event_delivered"]["event"].items() if k != "headers"}
    data = {"compensating": False, "event": event}
    body = record_of("event_delivered", data).body
    assert isinstance(body, saga.EventDelivered)
    assert body.event.headers == {}
    assert body.data() == data


def test_fields_with_defaults_may_be_missing() -> None:
    started = record_of("step_started", {"handler": "run", "attempt": 1}).body
    assert started == saga.StepStarted(compensating=False, handler="run", attempt=1, recovery=0)
    waiting = record_of("step_waiting", {"event": "go", "state": None}).body
    assert isinstance(waiting, saga.StepWaiting)
    assert (waiting.key, waiting.timeout, waiting.deadline) == (None, None, None)
    assert record_of("saga_completed", {}).body == saga.SagaCompleted(dead_letters=0)


def test_bodies_hold_the_public_values() -> None:
    waiting = record_of("step_waiting", FORMAT_1["step_waiting"]).body
    assert isinstance(waiting, saga.StepWaiting)
    assert waiting.wait == saga.Wait(name="paid", key="k", timeout=60.0)
    delivered = record_of("event_delivered", FORMAT_1["event_delivered"]).body
    assert isinstance(delivered, saga.EventDelivered)
    assert delivered.event == saga.Event(
        name="paid", payload={"ok": True}, key=None, event_id="e1",
        headers={"traceparent": "00-ab-cd-01"},
    )  # fmt: skip
    failed = record_of("step_failed", FORMAT_1["step_failed"]).body
    assert isinstance(failed, saga.StepFailed)
    assert failed.error == saga.ErrorInfo(type="Declined", message="no")
    started = record_of("compensation_started", FORMAT_1["compensation_started"]).body
    assert isinstance(started, saga.CompensationStarted)
    assert started.error == saga.ErrorInfo(type="Declined", message="no", step="B")


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("teleported", {}, "unknown record kind 'teleported' at seq 2"),
        ("step_started", {"compensating": False, "attempt": 1}, "bad step_started record at seq 2"),
        ("step_failed", {**FORMAT_1["step_failed"], "attempt": "two"}, "bad step_failed"),
        ("event_delivered", {"event": "not a map"}, "bad event_delivered"),
        ("saga_started", {**FORMAT_1["saga_started"], "steps": [1, 2]}, "bad saga_started"),
    ],
    ids=["unknown-kind", "missing-field", "wrong-type", "event-not-a-map", "steps-not-names"],
)
def test_data_that_does_not_fit_its_kind_is_corrupt_log(
    kind: str, data: dict[str, Any], message: str
) -> None:
    record = record_of(kind, data)
    with pytest.raises(saga.CorruptLog, match=message):
        _ = record.body
    assert record.data == data  # the record itself still reads as stored


@pytest.mark.parametrize("kind", list(FORMAT_1))
def test_a_stored_record_reads_the_same_body_straight_from_its_bytes(kind: str) -> None:
    record = record_of(kind, FORMAT_1[kind])
    stored = decode_stored_record(encode_record(record))
    assert (stored.seq, stored.kind, stored.at, stored.step) == (2, kind, T0, "A")
    assert stored.body == record.body


@pytest.mark.parametrize(
    ("kind", "data"),
    [("teleported", {}), ("step_started", {"attempt": 1}), ("saga_started", {"steps": [1]})],
    ids=["unknown-kind", "missing-field", "wrong-type"],
)
def test_a_stored_record_that_does_not_fit_is_corrupt_log(kind: str, data: dict[str, Any]) -> None:
    stored = decode_stored_record(encode_record(record_of(kind, data)))
    with pytest.raises(saga.CorruptLog, match=f"{kind}.* at seq 2"):
        _ = stored.body


def test_recovery_and_replay_fold_the_pinned_log_alike() -> None:
    sample = Path(__file__).parent / "data" / "log_v1.msgpack"
    bodies = msgspec.msgpack.decode(sample.read_bytes(), type=list[bytes])
    for end in range(1, len(bodies) + 1):
        stored = Progress.from_records([decode_stored_record(b) for b in bodies[:end]])
        replayed = Progress.from_records([decode_record(b) for b in bodies[:end]])
        assert stored.info() == replayed.info()
        assert (stored.wait, stored.deadline, stored.event) == (
            replayed.wait, replayed.deadline, replayed.event,
        )  # fmt: skip


def test_a_built_record_keeps_its_body_and_observers_get_plain_values() -> None:
    state = msgspec.msgpack.encode({"n": 4})
    body = saga.StepCompleted(compensating=False, state=msgspec.Raw(state))
    record = new_record(body, seq=3, at=T0, step="A")
    assert record.body is body  # never decoded back
    data = {"compensating": False, "state": {"n": 4}}
    expected = saga.Record(seq=3, kind="step_completed", at=T0, step="A", data=data)
    assert encode_record(record) == encode_record(expected)  # the state's bytes, as they are
    plain = plain_record(record)
    assert plain.data == data
    assert plain.body == saga.StepCompleted(compensating=False, state={"n": 4})


class Count(msgspec.Struct):
    n: int = 0


class Bump(saga.Step):
    async def run(self, ctx: saga.StepContext[Count]) -> saga.Wait:
        ctx.state.n += 1
        return saga.wait_for("go")

    async def on_event(self, ctx: saga.StepContext[Count], event: saga.Event) -> None:
        ctx.state.n += event.payload


class Seen(saga.Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, saga.RecordBody]] = []

    async def on_transition(self, record: saga.Record, info: saga.SagaInfo) -> None:
        assert type(record.kind) is str
        self.seen.append((record.kind, record.body))


async def test_observers_and_history_read_the_same_typed_bodies() -> None:
    seen = Seen()
    bump = saga.Saga("bump", state=Count, steps=[Bump()])
    async with saga.Runtime("sqlite:///:memory:", sagas=[bump], observers=[seen]) as runtime:
        handle = await runtime.start(bump, Count(), saga_id="b")
        await runtime.send("b", "go", 10, event_id="e1")  # kept until the step waits for it
        await handle.result(timeout=5)
        history = await runtime.history("b")
    assert [kind for kind, _ in seen.seen] == [r.kind for r in history] == [
        saga.RecordKind.SAGA_STARTED, saga.RecordKind.STEP_STARTED,
        saga.RecordKind.STEP_WAITING, saga.RecordKind.EVENT_DELIVERED,
        saga.RecordKind.STEP_STARTED, saga.RecordKind.STEP_COMPLETED,
        saga.RecordKind.SAGA_COMPLETED,
    ]  # fmt: skip
    assert [body for _, body in seen.seen] == [r.body for r in history]
    waiting = seen.seen[2][1]
    assert isinstance(waiting, saga.StepWaiting)
    assert (waiting.wait, waiting.state) == (saga.Wait(name="go"), {"n": 1})  # plain values
    delivered = seen.seen[3][1]
    assert isinstance(delivered, saga.EventDelivered)
    assert (delivered.event.name, delivered.event.payload) == ("go", 10)


def test_the_timeline_reads_bodies_and_shows_what_does_not_decode_as_stored() -> None:
    from saga._cli._timeline import entries

    first = saga.Record(seq=1, kind="saga_started", at=T0, data=FORMAT_1["saga_started"])
    failed = saga.Record(seq=2, kind="step_failed", at=T0 + 1, step="A",
                         data=FORMAT_1["step_failed"])  # fmt: skip
    odd = saga.Record(seq=3, kind="step_started", at=T0 + 2, step="A", data={"attempt": "x"})
    shown = entries([first, failed, odd])
    assert [(e.direction, e.attempt) for e in shown] == [(None, None), ("forward", 2), (None, None)]
    assert shown[0].what == "started trip v2; steps: A, B"
    assert shown[1].what == "failed: Declined: no; retry at +4.000s"
    assert shown[2].what == 'step_started {"attempt": "x"}'
