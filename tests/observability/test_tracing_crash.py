"""A traced saga survives a SIGKILL as one trace with no span emitted twice.

`_tracing_worker.py` runs two sagas with a `TracingObserver` whose spans are written, as
each ends, to a file: ``w`` waits for an event, ``x`` is inside step B when the process is
killed. A second worker on the same SQLite file recovers both and finishes them.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _processes import child_env

WORKER = Path(__file__).with_name("_tracing_worker.py")
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def spawn(tmp: Path, mode: str) -> subprocess.Popen[str]:
    argv = [sys.executable, str(WORKER), str(tmp / "saga.db"), str(tmp / "spans.jsonl"),
            str(tmp / "journal.jsonl"), mode]  # fmt: skip
    stderr = (tmp / f"stderr-{mode}.txt").open("w")
    try:
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env()
        )
    finally:
        stderr.close()


def read_until(proc: subprocess.Popen[str], prefix: str, tmp: Path, mode: str) -> str:
    """The first stdout line starting with ``prefix``; fails after `TIMEOUT` seconds."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                found.put(line.strip())
                return
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        line = found.get(timeout=TIMEOUT)
    except queue.Empty:
        line = None
    if line is None:
        proc.kill()
        code = proc.wait(timeout=TIMEOUT)
        stderr = (tmp / f"stderr-{mode}.txt").read_text()
        pytest.fail(f"no {prefix!r} from the worker (exit {code}):\n{stderr}")
    return line


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_saga_killed_while_waiting_and_mid_step_stays_one_trace(tmp_path: Path) -> None:
    first = spawn(tmp_path, "start")
    try:
        assert read_until(first, "BLOCKED ", tmp_path, "start") == "BLOCKED x"
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=TIMEOUT)
        assert first.stdout is not None
        first.stdout.close()
    before_kill = lines(tmp_path / "spans.jsonl")

    second = spawn(tmp_path, "resume")
    try:
        summary = read_until(second, "SUMMARY ", tmp_path, "resume")
        assert second.wait(timeout=TIMEOUT) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(timeout=TIMEOUT)
        assert second.stdout is not None
        second.stdout.close()
    assert json.loads(summary.split(" ", 1)[1]) == {"w": "COMPLETED", "x": "COMPLETED"}

    spans = lines(tmp_path / "spans.jsonl")
    assert spans[: len(before_kill)] == before_kill
    assert len({s["span_id"] for s in spans}) == len(spans)  # no span exported twice
    first_pid, second_pid = before_kill[0]["pid"], spans[-1]["pid"]
    assert {s["pid"] for s in spans} == {first_pid, second_pid}

    for saga_id in ("w", "x"):
        mine = [s for s in spans if s["attributes"].get("saga.id") == saga_id]
        (request,) = [s for s in mine if s["name"] == "request"]
        (anchor,) = [s for s in mine if s["name"] == "saga crash"]
        (sender,) = [s for s in mine if s["name"] == "send"]
        saga_spans = [s for s in mine if s["name"] not in ("request", "send")]
        # One trace, from the request that started the saga to its end, across the kill
        # (the sender of the event is in a trace of its own: it is linked, not a parent).
        assert {s["trace_id"] for s in [request, *saga_spans]} == {request["trace_id"]}
        assert sender["trace_id"] != request["trace_id"]
        assert anchor["parent"] == request["span_id"]
        assert {s["parent"] for s in saga_spans if s is not anchor} == {anchor["span_id"]}
        # Each handler invocation has exactly one span; none is repeated.
        invocations = Counter((s["name"], s["attributes"].get("saga.handler")) for s in saga_spans)
        assert invocations == {
            ("saga crash", None): 1, ("step A", "run"): 1, ("step W", "run"): 1,
            ("step W", "on_event"): 1, ("step B", "run"): 1, ("step C", "run"): 1,
            ("saga crash completed", None): 1,
        }  # fmt: skip
        (on_event,) = [s for s in saga_spans if s["attributes"].get("saga.handler") == "on_event"]
        assert on_event["links"] == [sender["span_id"]]

    # x was inside B when killed: B ran twice, but only the re-run (a recovery) has a span.
    journal = Counter(
        (e["saga"], e["step"], e["handler"]) for e in lines(tmp_path / "journal.jsonl")
    )
    assert journal[("x", "B", "run")] == 2
    assert {k: v for k, v in journal.items() if v != 1} == {("x", "B", "run"): 2}
    (b,) = [s for s in spans if s["name"] == "step B" and s["attributes"]["saga.id"] == "x"]
    assert (b["pid"], b["attributes"]["saga.recovery"], b["status"]) == (second_pid, 1, "UNSET")
    # w was waiting when killed: its wait is an event of a span that had already ended.
    (w_on_event,) = [s for s in spans if s["name"] == "step W" and s["attributes"]["saga.id"] == "w"
                     and s["attributes"]["saga.handler"] == "on_event"]  # fmt: skip
    assert w_on_event["pid"] == second_pid
    assert not any(s["pid"] == second_pid and s["name"] == "step A" for s in spans)
