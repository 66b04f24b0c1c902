"""The ``saga`` command line on a PostgreSQL store, beside a live worker: reads see what the
worker wrote, and an abort from the command line reaches the worker that owns the saga."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from _behaviour import Gate, Trip, simple_step
from _pg import url_for
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio


async def cli(url: str, *args: str) -> str:
    """``python -m saga --db URL ARGS`` in a subprocess; its output (it must succeed)."""
    argv = [sys.executable, "-m", "saga", "--db", url, *args]
    result = await anyio.run_process(argv, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


async def test_list_show_and_abort_against_a_live_postgresql_worker(schema: str) -> None:
    calls: list[str] = []
    definition = saga.Saga("trip", state=Trip, steps=[simple_step("Book", calls), Gate()])
    url = url_for(schema)
    async with saga.Runtime(url, sagas=[definition]) as runtime:
        await runtime.start(definition, Trip(), saga_id="t-1")
        await wait_until(runtime, "t-1", saga.Status.WAITING)

        listed = json.loads(await cli(url, "list", "--json"))
        assert [(i["saga_id"], i["status"]) for i in listed] == [("t-1", "WAITING")]
        history = json.loads(await cli(url, "history", "t-1", "--json"))
        assert [r["kind"] for r in history][-1] == "step_waiting"

        said = await cli(url, "abort", "t-1", "--reason", "customer cancelled", "--wait", "30")
        assert "t-1" in said
        info = await wait_until(runtime, "t-1", saga.Status.COMPENSATED)
        assert info.error is not None
        assert "customer cancelled" in str(info.error)
        assert calls == ["Book.run", "Book.compensate"]
