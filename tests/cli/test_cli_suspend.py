"""``saga retry``, ``saga skip`` and ``saga revert`` against a live runtime: a request in
the store that the runtime performs; exit 0 done, 1 refused or not found.
``list`` and ``show`` show SUSPENDED."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import msgspec
import pytest
from _cli import fails, ok, ok_json, run, url
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    ran: list[str] = msgspec.field(default_factory=list)


class Step(saga.Step):
    def __init__(self, name: str, failures: int = 0) -> None:
        self.name = name
        self.failures = failures

    async def run(self, ctx: saga.StepContext[Order]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError(f"{self.name} is down")
        ctx.state.ran.append(self.name)

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.ran.append(f"undo {self.name}")


class Charge(Step):
    on_exhausted = "suspend"


async def cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    """The command line in a thread, so the runtime in this loop keeps running."""
    return await anyio.to_thread.run_sync(lambda: run(*args, db=db))


async def test_retry_skip_and_revert_from_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    charge = Charge("Charge", failures=1)
    order = saga.Saga("order", state=Order, steps=[Step("Reserve"), charge, Step("Ship")])
    async with saga.Runtime(url(db), sagas=[order]) as rt:
        await rt.start(order, Order(), saga_id="o-1")
        await wait_until(rt, "o-1", saga.Status.SUSPENDED)
        listed = await anyio.to_thread.run_sync(lambda: ok_json("list", db=db))
        assert [(s["saga_id"], s["status"]) for s in listed] == [("o-1", "SUSPENDED")]
        shown = await anyio.to_thread.run_sync(lambda: ok("show", "o-1", db=db))
        assert "SUSPENDED" in shown
        assert "saga retry o-1" in shown

        # a wrong status is refused (exit 1); a missing reason is a usage error (exit 2)
        refused = await cli("revert", "o-1", "--reason", "x", db=db)
        assert refused.returncode == 1
        assert "not COMPLETED" in refused.stderr
        usage = await cli("retry", "o-1", db=db)
        assert (usage.returncode, "--reason" in usage.stderr) == (2, True)
        assert (await cli("skip", "nope", "--reason", "x", db=db)).returncode == 1

        done = await cli("retry", "o-1", "--reason", "processor back", "--by", "ops",
                         "--wait", "30", "--json", db=db)  # fmt: skip
        assert done.returncode == 0, done
        info = await wait_until(rt, "o-1", saga.Status.COMPLETED, timeout=10)
        assert info.state.ran == ["Reserve", "Charge", "Ship"]
        [retried] = [r for r in await rt.history("o-1") if r.kind == "saga_retried"]
        assert retried.data == {"reason": "processor back", "by": "ops"}

        charge.failures = 5
        await rt.start(order, Order(), saga_id="o-2")
        await wait_until(rt, "o-2", saga.Status.SUSPENDED)
        done = await cli("skip", "o-2", "--reason", "by phone", "--wait", "30", db=db)
        assert done.returncode == 0, done
        info = await wait_until(rt, "o-2", saga.Status.COMPLETED, timeout=10)
        assert info.state.ran == ["Reserve", "Ship"]

        done = await cli("revert", "o-2", "--reason", "cancelled", "--wait", "30", db=db)
        assert done.returncode == 0, done
        info = await wait_until(rt, "o-2", saga.Status.COMPENSATED, timeout=10)
        assert info.state.ran[-2:] == ["undo Ship", "undo Reserve"]
        shown = await anyio.to_thread.run_sync(lambda: ok("show", "o-2", db=db))
        assert "skipped: by phone" in shown
        assert "revert requested by" in shown
        assert rt.observer_errors == 0


def test_operator_commands_need_a_store_saga(tmp_path: Path) -> None:
    fails("retry", "x", "--reason", "y", db=tmp_path / "none.db")
