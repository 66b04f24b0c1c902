"""``saga replay ID --at SEQ`` agrees with what the live runtime said at every record.

A runtime runs one saga through a wait, an event, a retried failure and a compensation that
waits too. An observer keeps the `SagaInfo` the runtime reported with each transition, and
`runtime.get` is read whenever the saga rests; then the command line folds the stored log
up to every seq, in other processes, and must say the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from _behaviour import Boom, Trip
from _cli import many_json, ok
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.log.append("reserved")
        ctx.state.n += 1

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.log.append("released")


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        return saga.wait_for("paid", key="k", timeout=600)

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        ctx.state.log.append(f"paid {event.payload['amount']}")
        ctx.state.n += event.payload["amount"]

    async def compensate(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        ctx.state.log.append("refund asked")
        return saga.wait_for("refunded")

    async def on_compensation_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        ctx.state.log.append("refunded")


class Ship(saga.Step):
    retry = saga.RetryPolicy(max_attempts=2, initial_interval=0.01)

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.log.append("lost")  # discarded: the handler fails
        raise Boom("no trucks")


TRIP = saga.Saga("trip", state=Trip, steps=[Reserve(), Pay(), Ship()])


class Recorder(saga.Observer):
    def __init__(self) -> None:
        self.infos: dict[int, Any] = {}

    async def on_transition(self, record: saga.Record, info: saga.SagaInfo) -> None:
        assert record.seq not in self.infos
        self.infos[record.seq] = msgspec.to_builtins(info)


async def test_replay_at_every_seq_agrees_with_the_live_runtime(tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    recorder = Recorder()
    rested: dict[int, Any] = {}  # seq -> runtime.get while the saga waited

    async def rest(status: saga.Status) -> None:
        info = await wait_until(runtime, "t", status)
        await anyio.sleep(0.05)
        info = await runtime.get("t")
        rested[info.seq] = msgspec.to_builtins(info)

    async with saga.Runtime(f"sqlite:///{db}", sagas=[TRIP], observers=[recorder]) as runtime:
        handle = await runtime.start(TRIP, Trip(), saga_id="t")
        await rest(saga.Status.WAITING)
        await runtime.send("t", "paid", {"amount": 40}, key="k")
        await rest(saga.Status.COMPENSATING)  # Ship failed twice; Pay's refund waits
        await runtime.send("t", "refunded")
        final = await handle.result(timeout=10)
        rested[final.seq] = msgspec.to_builtins(await runtime.get("t"))
        records = await runtime.history("t")

    assert final.status is saga.Status.COMPENSATED
    kinds = [r.kind for r in records]
    assert kinds.count("step_failed") == 2
    assert kinds.count("step_waiting") == 2
    assert sorted(recorder.infos) == list(range(1, len(records) + 1))

    replayed = many_json([["replay", "t", "--at", str(seq)] for seq in range(1, len(records) + 1)],
                         db)  # fmt: skip
    for seq, found in enumerate(replayed, start=1):
        assert found["record"] == msgspec.to_builtins(records[seq - 1])
        assert found["last_seq"] == len(records)
        assert found["saga"] == recorder.infos[seq], f"at seq {seq}"
    for seq, info in rested.items():
        assert replayed[seq - 1]["saga"] == info, f"runtime.get at seq {seq}"
    statuses = [found["saga"]["status"] for found in replayed]
    assert {"RUNNING", "WAITING", "COMPENSATING", "COMPENSATED"} == set(statuses)

    # The same point, for people: the state after the payment and before the shipping.
    paid = next(r.seq for r in records if r.kind == "step_completed" and r.step == "Pay")
    lines = ok("replay", "t", "--at", str(paid), db=db).splitlines()
    assert lines[0] == f"saga t (trip v1) as of record {paid} of {len(records)}"
    assert "status    RUNNING" in lines
    assert 'state     {"log": ["reserved", "paid 40"], "n": 41}' in lines
