"""A rolling deploy on PostgreSQL: worker A runs version 1 of a saga, B runs versions 1 and
2, C runs version 2 only, and a process with no definitions only sends. When A is killed,
every version-1 saga must go to B and finish; C must never hold one, and the sender must
never own anything."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

import anyio
import pytest
from _deploy_worker import V1, V2, Order
from _pg import query, url_for
from _processes import Process

import saga

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

WORKER = Path(__file__).with_name("_deploy_worker.py")
COUNT = 40


async def owners(schema: str) -> dict[str, tuple[int | None, int, str]]:
    rows = await query(schema, "SELECT saga_id, owner, version, status FROM sagas")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_a_rolling_deploy_moves_each_saga_to_a_worker_that_can_run_it(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="saga")
    url = url_for(schema, lease_seconds=1)
    a = Process([str(WORKER), url, str(COUNT)])
    try:
        a.wait_for("STARTED")
        workers = anyio.run(_with_b_c_and_a_sender, url, schema, a)
    finally:
        a.finish()
    # Only B ever took sagas over (each at most once), and nobody had to hand one back.
    took = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert took, "B never took A's sagas over"
    assert all(m.startswith(f"worker {workers['b']} ") for m in took), took
    assert not [r for r in caplog.records if "handed back" in r.getMessage()]


async def _with_b_c_and_a_sender(url: str, schema: str, a: Process) -> dict[str, str]:
    async with (
        saga.Runtime(url, sagas=[V1, V2]) as b,
        saga.Runtime(url, sagas=[V2]) as c,
        saga.Runtime(url, sagas=[]) as sender,
    ):
        fences = {"b": {b.store.fence}, "c": {c.store.fence}, "sender": {sender.store.fence}}
        for n in range(10):
            await b.start(V2, Order(), saga_id=f"v2-b-{n}")
            await c.start(V2, Order(), saga_id=f"v2-c-{n}")
        a.signal(signal.SIGKILL)
        a.proc.wait(timeout=30)
        for saga_id in [f"v1-{n}" for n in range(COUNT)] + [
            f"v2-{w}-{n}" for w in "bc" for n in range(10)
        ]:
            await sender.send(saga_id, "go", event_id="go-" + saga_id)

        deadline = time.monotonic() + 60
        seen_owners: dict[str, set[int | None]] = {}
        while True:
            for name, runtime in (("b", b), ("c", c), ("sender", sender)):
                fences[name].add(runtime.store.fence)
            rows = await owners(schema)
            for saga_id, (owner, _, _) in rows.items():
                seen_owners.setdefault(saga_id, set()).add(owner)
            if all(status == "COMPLETED" for _, _, status in rows.values()):
                break
            assert time.monotonic() < deadline, {
                k: v for k, v in rows.items() if v[2] != "COMPLETED"
            }
            await anyio.sleep(0.02)

        for n in range(COUNT):
            info = await b.get(f"v1-{n}")
            assert info.status is saga.Status.COMPLETED
            assert info.state.trail == ["reserved", "paid"]
            assert info.version == 1
        for saga_id, owners_seen in seen_owners.items():
            assert not owners_seen & fences["sender"], saga_id  # a sender owns nothing
            if saga_id.startswith("v1-"):
                assert not owners_seen & fences["c"], saga_id  # C never held a v1 saga
        # A wrote up to the wait (seq 5); every later record of a v1 saga was written by B.
        rows = await query(
            schema, "SELECT DISTINCT fence FROM saga_log WHERE saga_id LIKE 'v1-%' AND seq > 5"
        )
        assert {r[0] for r in rows} <= fences["b"]
        for n in range(10):
            assert (await c.get(f"v2-c-{n}")).state.trail == ["reserved", "paid", "notified"]
        return {"b": b.store.worker, "c": c.store.worker}  # type: ignore[attr-defined]
