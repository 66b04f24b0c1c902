"""Machine facts, medians and ranges, target verdicts, and the printed table."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import statistics
import subprocess
from typing import Any

from benchmarks._plan import METRICS, TARGETS, Metric, Target

__all__ = ["machine", "summarize", "table", "verdicts"]


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(workdir: str) -> dict[str, Any]:
    """What the figures were measured on."""
    mem = _first_line("/proc/meminfo", "MemTotal")
    try:
        df = (
            subprocess.run(["df", "-hT", workdir], capture_output=True, text=True, check=False)
            .stdout.splitlines()[-1]
            .split()
        )
        disk = f"{df[0]} ({df[1]}, {df[2]}, {df[5]} used)"
    except (OSError, IndexError):
        disk = None
    return {
        "nproc": os.cpu_count(),
        "cpu": _first_line("/proc/cpuinfo", "model name"),
        "memory": mem,
        "disk": disk,
        "workdir": workdir,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": {p: _version(p) for p in ("saga", "dbos", "aiosqlite", "msgspec", "anyio")},
    }


def _get(result: dict[str, Any], key: str) -> float | None:
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def summarize(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per metric: each system's median and range over its runs, and saga/DBOS."""
    out: dict[str, Any] = {}
    for metric in METRICS:
        if metric.scenario != scenario:
            continue
        row: dict[str, Any] = {}
        for system in metric.systems:
            values = [v for r in runs.get(system, []) if (v := _get(r, metric.key)) is not None]
            if values:
                row[system] = _stats(values)
        if "saga" in row and "dbos" in row and row["dbos"]["median"]:
            row["ratio"] = row["saga"]["median"] / row["dbos"]["median"]
        if row:
            out[metric.key] = row
    return out


def _verdict(target: Target, scenario: dict[str, Any]) -> dict[str, Any]:
    row = scenario.get("summary", {}).get(target.key, {})
    out: dict[str, Any] = {"scenario": target.scenario, "target": target.text}
    saga = row.get("saga")
    if saga is None:
        return {**out, "status": "not run"}
    value = saga["median"]
    out["saga"] = value
    if target.vs is not None:
        peer = row.get(target.vs)
        if peer is None:
            return {**out, "status": f"not checked ({target.vs} not run)"}
        bound = peer["median"] * target.factor
        out["bound"] = bound
    else:
        assert target.limit is not None
        bound = target.limit
    met = value >= bound if target.at_least else value <= bound
    size = scenario.get("params", {}).get("saga", {})
    smaller = {k: v for k, v in target.full_size.items() if size.get(k) != v}
    if smaller:
        got = ", ".join(f"{k}={size.get(k)}" for k in smaller)
        want = ", ".join(f"{k}={v}" for k, v in smaller.items())
        status = f"{'met' if met else 'NOT met'} at {got} (target is set at {want})"
        return {**out, "bound": bound, "met": met, "status": status}
    return {**out, "bound": bound, "met": met, "status": "met" if met else "NOT met"}


def verdicts(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    return [_verdict(t, scenarios[t.scenario]) for t in TARGETS if t.scenario in scenarios]


def _num(value: float) -> str:
    if value >= 10_000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _cell(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    if stats["n"] == 1:
        return _num(stats["median"])
    return f"{_num(stats['median'])} [{_num(stats['min'])}-{_num(stats['max'])}]"


def _size(params: dict[str, Any]) -> str:
    for key in ("sagas", "runs"):
        if key in params:
            return f"{params[key]:,}"
    return ""


def _rows(scenarios: dict[str, Any]) -> list[list[str]]:
    rows = []
    for metric in METRICS:
        scenario = scenarios.get(metric.scenario)
        if scenario is None or metric.key not in scenario.get("summary", {}):
            continue
        row = scenario["summary"][metric.key]
        params = scenario.get("params", {})
        saga_col = _cell(row.get("saga") or row.get("raw"))
        if "saga" not in row and "raw" in row:
            saga_col += " (raw floor)"
        peer_name = "dbos" if "dbos" in metric.systems else "raw"
        peer = row.get(peer_name) if "saga" in row else None
        peer_col = _cell(peer) + (" (raw floor)" if peer is not None and peer_name == "raw" else "")
        ratio = row.get("ratio")
        if ratio is None and "saga" in row and "raw" in row:
            ratio = row["saga"]["median"] / row["raw"]["median"]
        rows.append(
            [
                metric.scenario,
                _label(metric),
                saga_col,
                _size(params.get("saga", {})),
                peer_col,
                _size(params.get(peer_name, {})) if peer is not None else "",
                "-" if ratio is None else f"{ratio:.3g}",
            ]
        )
    return rows


def _label(metric: Metric) -> str:
    return f"{metric.label} ({metric.unit})" if metric.unit else metric.label


HEADER = [
    "scenario",
    "metric",
    "saga median [range]",
    "n",
    "DBOS / floor median [range]",
    "n",
    "ratio",
]


def table(scenarios: dict[str, Any], *, markdown: bool = False) -> str:
    rows = _rows(scenarios)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


def verdict_lines(items: list[dict[str, Any]]) -> str:
    lines = []
    for v in items:
        figure = ""
        if "saga" in v:
            figure = f": saga {_num(v['saga'])}"
            if "bound" in v:
                figure += f" vs bound {_num(v['bound'])}"
        lines.append(f"- [{v['status']}] {v['scenario']}: {v['target']}{figure}")
    return "\n".join(lines)
