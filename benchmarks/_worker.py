"""One measured run in a fresh process: ``python -m benchmarks._worker REQUEST.json``.

The request names the system (``saga``, ``dbos`` or ``raw``), the scenario and its
parameters; the result is written as JSON to the request's ``out`` path. A fresh process per
run keeps the systems apart (DBOS keeps process-global state) and makes each RSS figure
the workload's own. For ``recovery`` this process first starts a load process, waits until
every saga is inside step 3, SIGKILLs it, and then measures its own restart on the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["main"]

Workload = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]


def _workloads(system: str) -> dict[str, Workload]:
    if system == "saga":
        from benchmarks._saga_work import WORKLOADS
    elif system == "dbos":
        from benchmarks._dbos_work import WORKLOADS
    elif system == "raw":
        from benchmarks._raw import WORKLOADS
    else:
        raise SystemExit(f"unknown system {system!r}")
    return WORKLOADS


def _kill_in_flight(system: str, params: dict[str, Any], tmp: str) -> dict[str, Any]:
    """Run the load process until every saga is in flight, then SIGKILL it."""
    request = {
        "system": system,
        "scenario": "recovery-load",
        "params": params,
        "out": os.path.join(tmp, "load.json"),
        "workdir": tmp,
    }
    path = os.path.join(tmp, "load-request.json")
    with open(path, "w") as f:
        json.dump(request, f)
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._worker", path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        for line in child.stdout:  # blocks until READY (or the child dies)
            if line.strip() == "READY":
                break
        else:
            raise RuntimeError("the load process ended before its sagas were in flight")
        loaded = time.perf_counter() - began
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    return {"load_seconds": loaded, "killed_with": "SIGKILL"}


def _run(system: str, scenario: str, params: dict[str, Any], tmp: str) -> dict[str, Any]:
    workloads = _workloads(system)
    if scenario == "coldstart-build":
        from benchmarks import _stores

        if system == "saga":
            return _stores.build_saga(params["db"], params["sagas"])
        return _stores.build_dbos(params["db"], params["sagas"], params["poll"])
    killed: dict[str, Any] = {}
    if scenario == "recovery":
        params = {**params, "db": os.path.join(tmp, f"{system}-recovery.db")}
        killed = _kill_in_flight(system, params, tmp)
    workload = workloads[scenario]
    profile = params.get("profile")
    if profile:
        from benchmarks._profile import profiled

        result = profiled(workload, params, tmp, profile)
    elif system == "dbos":
        result = asyncio.run(workload(params, tmp))  # type: ignore[arg-type]
    else:
        import anyio

        result = anyio.run(workload, params, tmp)
    return {**killed, **result}


def main() -> None:
    with open(sys.argv[1]) as f:
        request = json.load(f)
    tmp = tempfile.mkdtemp(prefix=f"{request['system']}-", dir=request.get("workdir"))
    try:
        result = _run(request["system"], request["scenario"], request["params"], tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(request["out"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
