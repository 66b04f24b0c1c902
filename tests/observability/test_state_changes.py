"""StateChangeRecorder and JsonLinesSink: one change per transition of status or state."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from _wait import wait_until

import saga
from observers import JsonLinesSink, StateChange, StateChangeRecorder

pytestmark = pytest.mark.anyio

MEMORY = "sqlite:///:memory:"


class State(msgspec.Struct):
    hotel: str | None = None
    paid: bool = False
    undo_allowed: bool = True


class Declined(Exception):
    pass


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> None:
        ctx.state.hotel = "room-1"

    async def compensate(self, ctx: saga.StepContext[State]) -> None:
        if not ctx.state.undo_allowed:
            raise Declined("hotel unreachable")
        ctx.state.hotel = None


class Pay(saga.Step):
    compensation_retry = saga.RetryPolicy(max_attempts=1)

    async def run(self, ctx: saga.StepContext[State]) -> saga.Wait:
        return saga.wait_for("paid", key=ctx.saga_id)

    async def on_event(self, ctx: saga.StepContext[State], event: saga.Event) -> None:
        if not event.payload:
            raise Declined("card refused")
        ctx.state.paid = True


class Notify(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> None:
        pass  # changes nothing: no StateChange for its completion


TRIP = saga.Saga("trip", state=State, steps=[Reserve(), Pay(), Notify()])
# Reserve's compensation fails for good once, so the saga ends FAILED (until resumed).
Reserve.compensation_retry = saga.RetryPolicy(max_attempts=1)


def expected(records: list[saga.Record]) -> list[tuple[Any, ...]]:
    """The changes the log implies, from the fold: where status or state moved."""
    changes = []
    status: saga.Status | None = None
    state: Any = None
    for record, info in saga.replay(records, TRIP):
        if record.kind == "saga_started" or info.status != status or info.state != state:
            changes.append((record.seq, record.kind, status, info.status, info.state))
        status, state = info.status, info.state
    return changes


def seen(changes: list[StateChange], saga_id: str) -> list[tuple[Any, ...]]:
    return [(c.seq, c.kind, c.from_status, c.to_status, c.state) for c in changes
            if c.saga_id == saga_id]  # fmt: skip


async def test_changes_match_what_the_log_implies_on_every_path() -> None:
    changes: list[StateChange] = []
    recorder = StateChangeRecorder(changes.append)  # a sync sink
    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[recorder]) as rt:
        await rt.start(TRIP, State(), saga_id="ok")
        await rt.start(TRIP, State(), saga_id="declined")
        await rt.start(TRIP, State(), saga_id="aborted")
        await rt.start(TRIP, State(undo_allowed=False), saga_id="failed")
        for saga_id in ("ok", "declined", "aborted", "failed"):
            await wait_until(rt, saga_id, saga.Status.WAITING, timeout=10)
        await rt.send("ok", "paid", True, key="ok")
        await rt.send("declined", "paid", False, key="declined")
        await rt.abort("aborted", "changed my mind")  # ends a wait: from WAITING
        await rt.send("failed", "paid", False, key="failed")
        for saga_id in ("ok", "declined", "aborted", "failed"):
            await rt.handle(saga_id).result(timeout=5)
        assert await rt.resume("failed", "hotel is back")  # FAILED -> COMPENSATING
        info = await rt.handle("failed").result(timeout=5)
        logs = {sid: await rt.history(sid) for sid in ("ok", "declined", "aborted", "failed")}
    assert info.status is saga.Status.FAILED  # the same compensation fails again

    for saga_id, records in logs.items():
        assert seen(changes, saga_id) == expected(records), saga_id
    ok = seen(changes, "ok")
    assert [(kind, a, b) for _, kind, a, b, _ in ok] == [
        ("saga_started", None, "RUNNING"),
        ("step_completed", "RUNNING", "RUNNING"),  # Reserve set the hotel
        ("step_waiting", "RUNNING", "WAITING"),
        ("event_delivered", "WAITING", "RUNNING"),
        ("step_completed", "RUNNING", "RUNNING"),  # Pay set paid
        ("saga_completed", "RUNNING", "COMPLETED"),  # Notify's completion changed nothing
    ]
    assert ok[-1][-1] == State(hotel="room-1", paid=True)
    aborted = [(kind, a, b) for _, kind, a, b, _ in seen(changes, "aborted")]
    assert ("compensation_started", "WAITING", "COMPENSATING") in aborted
    failed = [(kind, a, b) for _, kind, a, b, _ in seen(changes, "failed")]
    assert failed[-3:] == [
        ("saga_failed", "COMPENSATING", "FAILED"),
        ("saga_resumed", "FAILED", "COMPENSATING"),
        ("saga_failed", "COMPENSATING", "FAILED"),
    ]
    first = next(c for c in changes if c.saga_id == "ok")
    assert (first.step, first.name, first.seq, first.from_status) == (None, "trip", 1, None)
    assert isinstance(first.state, State)


async def test_an_async_sink_is_awaited() -> None:
    received: list[StateChange] = []

    async def sink(change: StateChange) -> None:
        await anyio.lowlevel.checkpoint()
        received.append(change)

    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[StateChangeRecorder(sink)]) as rt:
        await rt.start(TRIP, State(), saga_id="a")
        await wait_until(rt, "a", saga.Status.WAITING, timeout=10)
        assert [c.kind for c in received] == ["saga_started", "step_completed", "step_waiting"]


async def test_json_lines_from_concurrent_sagas_parse_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    path.write_text('{"earlier": true}\n')  # appended to, never truncated
    sink = JsonLinesSink(path)
    ids = [f"s{i:02d}" for i in range(40)]
    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[StateChangeRecorder(sink)]) as rt:
        async with anyio.create_task_group() as tg:
            for saga_id in ids:
                tg.start_soon(functools.partial(rt.start, TRIP, State(), saga_id=saga_id))
        for saga_id in ids:
            await wait_until(rt, saga_id, saga.Status.WAITING, timeout=10)
        for saga_id in ids:
            await rt.send(saga_id, "paid", True, key=saga_id)
        for saga_id in ids:
            await rt.handle(saga_id).result(timeout=10)
        logs = {saga_id: await rt.history(saga_id) for saga_id in ids}

    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"earlier": True}
    rows = [json.loads(line) for line in lines[1:]]
    assert len(rows) == 6 * len(ids)
    for saga_id in ids:
        mine = [r for r in rows if r["saga_id"] == saga_id]
        assert [(r["seq"], r["kind"], r["from_status"], r["to_status"]) for r in mine] == [
            (seq, kind, None if a is None else a.value, b.value)
            for seq, kind, a, b, _ in expected(logs[saga_id])
        ]
    assert rows[-1].keys() == {"saga_id", "seq", "at", "step", "from_status", "to_status",
                               "state", "kind", "name"}  # fmt: skip
    done = [r for r in rows if r["kind"] == "saga_completed"]
    assert {r["saga_id"] for r in done} == set(ids)
    assert all(r["state"] == {"hotel": "room-1", "paid": True, "undo_allowed": True} for r in done)


async def test_the_sink_serializes_many_concurrent_writers(tmp_path: Path) -> None:
    sink = JsonLinesSink(tmp_path / "burst.jsonl")
    big = "x" * 5000  # lines longer than a pipe buffer still come out whole

    async def write(i: int) -> None:
        await sink(StateChange(f"s{i}", i, 0.5, None, None, saga.Status.RUNNING, {"pad": big}))

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(write, i)
    rows = [json.loads(line) for line in (tmp_path / "burst.jsonl").read_text().splitlines()]
    assert sorted(r["seq"] for r in rows) == list(range(200))
    assert all(r["state"] == {"pad": big} and r["to_status"] == "RUNNING" for r in rows)


async def test_a_failing_sink_is_logged_and_never_changes_the_saga(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(change: StateChange) -> None:
        raise RuntimeError("sink is down")

    unwritable = JsonLinesSink(tmp_path)  # a directory: every write fails with OSError
    observers = [StateChangeRecorder(broken), StateChangeRecorder(unwritable)]
    with caplog.at_level(logging.ERROR, logger="saga.observers"):
        async with saga.Runtime(MEMORY, sagas=[TRIP], observers=observers) as rt:
            handle = await rt.start(TRIP, State(), saga_id="s")
            await wait_until(rt, "s", saga.Status.WAITING, timeout=10)
            await rt.send("s", "paid", True, key="s")
            info = await handle.result(timeout=5)
            errors = rt.observer_errors
    assert info.status is saga.Status.COMPLETED
    assert info.state == State(hotel="room-1", paid=True)
    assert errors == 2 * 6  # both recorders, on each of the six changes
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("observer StateChangeRecorder.on_transition raised RuntimeError; "
                          "the saga carries on") == 6  # fmt: skip
    assert messages.count("observer StateChangeRecorder.on_transition raised OSError; "
                          "the saga carries on") == 6  # fmt: skip


def test_a_sink_must_be_callable() -> None:
    with pytest.raises(TypeError, match="sink must be callable"):
        StateChangeRecorder("changes.jsonl")  # type: ignore[arg-type]
