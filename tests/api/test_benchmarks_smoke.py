"""The benchmarks still run: ``python -m benchmarks run --smoke``, tiny sizes, one run each.

No timing is asserted (timings live in benchmarks/README.md): only that every scenario
ran, produced figures, and wrote its JSON. The DBOS half needs the optional extra
``bench`` and is skipped without it; the saga half always runs.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from _pg import PG_URL, require_server

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {"throughput", "latency", "events", "parked", "recovery", "coldstart"}


def _smoke(tmp_path: Path, systems: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "run",
        "--smoke",
        "--systems",
        systems,
        "--out",
        str(out),
        "--workdir",
        str(tmp_path),
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def _median(report: dict[str, Any], scenario: str, key: str, system: str) -> float:
    value: float = report["scenarios"][scenario]["summary"][key][system]["median"]
    return value


def _check(report: dict[str, Any], system: str) -> None:
    assert report["failures"] == 0
    assert set(report["scenarios"]) == SCENARIOS
    for scenario in SCENARIOS:
        assert len(report["scenarios"][scenario]["runs"][system]) == 1, scenario
    assert _median(report, "throughput", "steps_per_s", system) > 0
    assert _median(report, "throughput", "log.records_per_saga", system) >= 5
    assert _median(report, "throughput", "log.disk_bytes_per_saga", system) > 0
    assert _median(report, "latency", "median_ms", system) > 0
    assert _median(report, "latency", "median_ms", system) <= _median(
        report, "latency", "p99_ms", system
    )
    events = report["scenarios"]["events"]
    assert events["runs"][system][0]["samples"] == events["params"][system]["runs"]
    parked = report["scenarios"]["parked"]["runs"][system][0]
    assert parked["sagas"] == report["scenarios"]["parked"]["params"][system]["sagas"]
    assert parked["delivery"]["samples"] > 0
    recovery = report["scenarios"]["recovery"]["runs"][system][0]
    assert recovery["killed_with"] == "SIGKILL"
    assert recovery["all_finished_s"] >= recovery["ready_s"] > 0
    assert _median(report, "coldstart", "ready_s", system) > 0


def test_smoke_saga(tmp_path: Path) -> None:
    report, printed = _smoke(tmp_path, "saga")
    _check(report, "saga")
    # The raw floor runs beside saga's throughput, with the same records.
    raw = report["scenarios"]["throughput"]["runs"]["raw"][0]
    assert (
        raw["records"]
        == _median(report, "throughput", "log.records_per_saga", "saga")
        * (report["scenarios"]["throughput"]["params"]["saga"]["sagas"])
    )
    assert raw["records_per_s"] > 0
    assert {t["scenario"] for t in report["targets"]} == SCENARIOS
    assert "Targets (saga):" in printed


@pytest.mark.skipif(importlib.util.find_spec("dbos") is None, reason="needs the extra 'bench'")
def test_smoke_dbos(tmp_path: Path) -> None:
    report, _ = _smoke(tmp_path, "dbos")
    _check(report, "dbos")
    settings = report["scenarios"]["throughput"]["runs"]["dbos"][0]["settings"]
    assert settings["sqlite"] == {"journal_mode": "wal", "synchronous": 2}  # FULL, like saga


def test_the_postgresql_scale_out_benchmark_runs(tmp_path: Path) -> None:
    """``python -m benchmarks workers`` at tiny sizes: every setup ran and reported."""
    anyio.run(require_server)
    out = tmp_path / "workers.json"
    command = [sys.executable, "-m", "benchmarks", "workers", "--workers", "1,2",
               "--sagas", "40", "--repeats", "1", "--url", PG_URL, "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = json.loads(out.read_text())["runs"]
    assert sorted(runs) == ["postgresql x1", "postgresql x2", "sqlite x1"]
    assert all(len(rates) == 1 and rates[0] > 0 for rates in runs.values())
    assert "| postgresql x2 |" in proc.stdout
