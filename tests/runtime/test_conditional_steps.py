"""`Step.should_run`: a step that does not apply to a saga is recorded as `step_skipped`,
never runs and is never compensated (SPEC section 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    express: bool = False
    gift: bool = False
    ran: list[str] = msgspec.field(default_factory=list)


class Tracked(saga.Step):
    """Appends its name to the state when it runs; counts runs and compensations."""

    def __init__(self, name: str, *, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.calls: list[str] = []

    async def run(self, ctx: saga.StepContext[Order]) -> None:
        self.calls.append("run")
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        ctx.state.ran.append(self.name)

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        self.calls.append("compensate")


class Express(Tracked):
    seen: list[Order]

    def should_run(self, state: Any) -> bool:
        self.seen.append(state)
        return bool(state.express)


class Wrap(Tracked):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait | None:
        self.calls.append("run")
        ctx.state.ran.append(self.name)
        ctx.state.gift = True  # the next step asks with this state, as committed
        return None


class GiftNote(Tracked):
    def should_run(self, state: Any) -> bool:
        return bool(state.gift)


class Broken(Tracked):
    def should_run(self, state: Any) -> bool:
        raise ValueError("cannot decide")


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        return saga.wait_for("paid")


def steps_of(*, express_fails: bool = False) -> tuple[list[saga.Step], Express]:
    express = Express("Express", fail=express_fails)
    express.seen = []
    return [Tracked("Reserve"), express, Tracked("Ship")], express


async def test_a_step_that_should_not_run_is_skipped_and_recorded(store_url: str) -> None:
    steps, express = steps_of()
    order = saga.Saga("order", state=Order, steps=steps)
    async with saga.Runtime(store_url, sagas=[order]) as rt:
        info = await (await rt.start(order, Order(), saga_id="o-1")).result(timeout=10)
        assert info.status is saga.Status.COMPLETED
        assert info.state.ran == ["Reserve", "Ship"]
        assert express.calls == []
        assert express.seen == [Order(ran=["Reserve"])]  # the state as Reserve saved it
        history = await rt.history("o-1")
        [skipped] = [r for r in history if r.kind == saga.RecordKind.STEP_SKIPPED]
        assert skipped.step == "Express"
        assert isinstance(skipped.body, saga.StepSkipped)
        assert skipped.data == {"compensating": False, "reason": "should_run returned False"}
        assert "Express" not in {r.step for r in history if r.kind == "step_started"}
        # replay folds it like the runtime did
        folded = dict((r.seq, i) for r, i in saga.replay(history, order))
        assert (folded[skipped.seq].step, folded[skipped.seq].status) == (
            "Ship",
            saga.Status.RUNNING,
        )
        assert folded[history[-1].seq].status is saga.Status.COMPLETED

        fast = await (await rt.start(order, Order(express=True), saga_id="o-2")).result(timeout=10)
        assert fast.state.ran == ["Reserve", "Express", "Ship"]


async def test_should_run_sees_the_state_the_step_before_saved(store_url: str) -> None:
    wrap, note = Wrap("Wrap"), GiftNote("GiftNote")
    order = saga.Saga("order", state=Order, steps=[wrap, note])
    async with saga.Runtime(store_url, sagas=[order]) as rt:
        info = await (await rt.start(order, Order(), saga_id="o-1")).result(timeout=10)
        assert info.state.ran == ["Wrap", "GiftNote"]


async def test_a_skipped_step_is_never_compensated(store_url: str) -> None:
    reserve, express, ship = Tracked("Reserve"), Express("Express"), Tracked("Ship", fail=True)
    express.seen = []
    order = saga.Saga("order", state=Order, steps=[reserve, express, ship])
    async with saga.Runtime(store_url, sagas=[order]) as rt:
        info = await (await rt.start(order, Order(), saga_id="o-1")).result(timeout=10)
        assert info.status is saga.Status.COMPENSATED
        assert express.calls == []
        assert reserve.calls == ["run", "compensate"]
        [plan] = [r for r in await rt.history("o-1") if r.kind == "compensation_started"]
        assert plan.body.steps == ["Ship", "Reserve"]  # type: ignore[attr-defined]


async def test_the_first_and_the_last_step_can_be_skipped(store_url: str) -> None:
    first, last = GiftNote("First"), GiftNote("Last")
    order = saga.Saga("order", state=Order, steps=[first, Tracked("Middle"), last])
    async with saga.Runtime(store_url, sagas=[order]) as rt:
        info = await (await rt.start(order, Order(), saga_id="o-1")).result(timeout=10)
        assert (info.status, info.state.ran) == (saga.Status.COMPLETED, ["Middle"])
        kinds = [r.kind for r in await rt.history("o-1")]
        assert kinds[:3] == ["saga_started", "step_skipped", "step_started"]
        assert kinds[-2:] == ["step_skipped", "saga_completed"]


async def test_a_should_run_that_raises_fails_the_step_without_compensating_it(
    store_url: str,
) -> None:
    reserve, broken = Tracked("Reserve"), Broken("Broken")
    order = saga.Saga("order", state=Order, steps=[reserve, broken, Tracked("Ship")])
    async with saga.Runtime(store_url, sagas=[order]) as rt:
        info = await (await rt.start(order, Order(), saga_id="o-1")).result(timeout=10)
        assert info.status is saga.Status.COMPENSATED
        assert info.error is not None
        assert (info.error.type, info.error.step) == ("ValueError", "Broken")
        assert broken.calls == []  # neither run nor compensate
        assert reserve.calls == ["run", "compensate"]
        [failed] = [r for r in await rt.history("o-1") if r.kind == "step_failed"]
        assert (failed.step, failed.data["handler"], failed.data["final"]) == (
            "Broken",
            "should_run",
            True,
        )


async def test_a_skip_survives_a_restart_and_is_not_asked_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    express = Express("Express")
    express.seen = []
    order = saga.Saga("order", state=Order, steps=[Tracked("Reserve"), express, Pay()])
    async with saga.Runtime(url, sagas=[order]) as rt:
        await rt.start(order, Order(), saga_id="o-1")
        await wait_until(rt, "o-1", saga.Status.WAITING)
    assert len(express.seen) == 1
    async with saga.Runtime(url, sagas=[order]) as rt:
        await rt.send("o-1", "paid")
        info = await rt.handle("o-1").result(timeout=10)
        assert info.status is saga.Status.COMPLETED
        assert len(express.seen) == 1  # the log says it was skipped: not asked again
        assert express.calls == []


async def test_every_observer_takes_a_skipped_step_in_its_stride() -> None:
    from observers import LoggingObserver, MetricsObserver, StateChangeRecorder, TracingObserver

    changes: list[Any] = []
    watchers = [TracingObserver(), MetricsObserver(), LoggingObserver(),
                StateChangeRecorder(changes.append)]  # fmt: skip
    steps, _ = steps_of()
    order = saga.Saga("order", state=Order, steps=steps)
    async with saga.Runtime("sqlite:///:memory:", sagas=[order], observers=watchers) as rt:
        info = await (await rt.start(order, Order(), saga_id="o-1")).result(timeout=10)
        assert info.status is saga.Status.COMPLETED
        assert rt.observer_errors == 0
    assert "step_skipped" not in [c.kind for c in changes]  # no status or state change
