"""``python -m benchmarks run [--smoke|--quick|--full] [--out results.json] [--only S,...]``.

Also ``python -m benchmarks profile [--out DIR]``: the throughput and latency workloads of
saga under pyinstrument, reports written to DIR; and ``python -m benchmarks workers``:
the throughput workload on PostgreSQL over 1, 2 and 4 worker processes (`_scale`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from benchmarks import _scale
from benchmarks._plan import MODES, SCENARIOS, Mode
from benchmarks._report import machine, table, verdict_lines, verdicts
from benchmarks._runner import Runner

DBOS_MISSING = "dbos is not installed (pip install -e '.[bench]'): DBOS runs skipped"


def _systems(wanted: str) -> tuple[list[str], list[str]]:
    systems = [s.strip() for s in wanted.split(",") if s.strip()]
    unknown = set(systems) - {"saga", "dbos"}
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(sorted(unknown))}")
    notes = []
    if "dbos" in systems and importlib.util.find_spec("dbos") is None:
        systems.remove("dbos")
        notes.append(DBOS_MISSING)
    return systems, notes


def _scenarios(only: str | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    return chosen


def _override(mode: Mode, settings: list[str]) -> Mode:
    """Apply ``--set scenario.system.key=value`` to a copy of the mode's sizes."""
    sizes = copy.deepcopy(mode.sizes)
    for setting in settings:
        try:
            path, value = setting.split("=", 1)
            scenario, system, key = path.split(".")
            sizes[scenario][system][key] = json.loads(value)
        except (ValueError, KeyError) as error:
            raise SystemExit(
                f"bad --set {setting!r} ({error}); use scenario.system.key=value"
            ) from None
    return dataclasses.replace(mode, sizes=sizes)


def run(args: argparse.Namespace) -> int:
    mode = _override(MODES[args.mode], args.set)
    systems, notes = _systems(args.systems)
    scenarios = _scenarios(args.only)
    workdir = tempfile.mkdtemp(prefix="saga-bench-", dir=args.workdir)
    repeats = args.repeats or mode.repeats
    runner = Runner(mode, systems, workdir, repeats=repeats, dbos_poll=args.dbos_poll)
    began = time.perf_counter()
    report: dict[str, Any] = {
        "mode": mode.name,
        "repeats": repeats,
        "systems": systems,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(workdir),
        "notes": notes,
        "scenarios": {},
    }
    try:
        for scenario in scenarios:
            report["scenarios"][scenario] = runner.run(scenario)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["seconds"] = time.perf_counter() - began
    report["targets"] = verdicts(report["scenarios"])
    report["failures"] = runner.failures
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    _print(report, markdown=args.markdown)
    if args.out:
        print(f"\nresults written to {args.out}")
    return 1 if runner.failures else 0


def _print(report: dict[str, Any], *, markdown: bool) -> None:
    print(
        f"\nsaga vs DBOS, mode {report['mode']}, {report['repeats']} run(s) each, alternating "
        f"({report['seconds']:.0f} s). ratio = saga / DBOS (or saga / raw floor).\n"
    )
    print(table(report["scenarios"], markdown=markdown))
    print("\nTargets (saga):")
    print(verdict_lines(report["targets"]))
    for note in report["notes"]:
        print(f"note: {note}")
    for name, scenario in report["scenarios"].items():
        for system, errors in scenario.get("errors", {}).items():
            print(f"error: {name} / {system}: {errors[0].splitlines()[-1] if errors[0] else ''}")


def show(args: argparse.Namespace) -> int:
    with open(args.results) as f:
        _print(json.load(f), markdown=args.markdown)
    return 0


def profile(args: argparse.Namespace) -> int:
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="saga-bench-", dir=args.workdir)
    runner = Runner(
        MODES["quick"], ["saga"], workdir, repeats=1, dbos_poll=0.01, profile_dir=args.out
    )
    try:
        choices = {
            "throughput": {"sagas": args.sagas},
            "latency": {"runs": args.runs, "warmup": 10},
            "recovery": {"sagas": 10_000},
            "parked": {"sagas": 20_000, "warmup": 1000, "deliveries": 200, "wave": 1000},
        }
        for scenario in args.scenarios.split(","):
            params = choices[scenario]
            result = runner.profile(scenario, params)
            if "error" in result:
                return 1
            top = os.path.join(args.out, f"saga-{scenario}-top.json")
            with open(top) as f:
                rows = json.load(f)[:25]
            print(f"\n== saga {scenario} {params}: self time by function (main thread) ==")
            for row in rows:
                print(f"{row['self_pct']:5.1f}%  {row['total_pct']:5.1f}%  {row['function']}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nfull reports: {args.out}/saga-*.txt and .html")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the scenarios, saga and DBOS alternately")
    size = r.add_mutually_exclusive_group()
    for name in MODES:
        size.add_argument(f"--{name}", dest="mode", action="store_const", const=name)
    r.set_defaults(mode="quick", func=run)
    r.add_argument("--out", help="write the results as JSON to this path")
    r.add_argument("--only", help=f"comma-separated scenarios of {', '.join(SCENARIOS)}")
    r.add_argument("--systems", default="saga,dbos", help="saga,dbos (default) or saga")
    r.add_argument("--repeats", type=int, help="runs per system (default: the mode's)")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="S.SYS.KEY=V",
        help="override a size, e.g. --set recovery.saga.sagas=10000 (repeatable)",
    )
    r.add_argument(
        "--dbos-poll",
        type=float,
        default=0.01,
        help="DBOS notification poll interval in s (DBOS's default is 1.0)",
    )
    r.add_argument("--workdir", help="where the stores go (default: the temp dir)")
    r.add_argument("--keep", action="store_true", help="keep the stores and raw results")
    r.add_argument("--markdown", action="store_true", help="print the table as markdown")
    s = sub.add_parser("show", help="print the table of a saved results file")
    s.set_defaults(func=show)
    s.add_argument("results", help="a JSON file written by run --out")
    s.add_argument("--markdown", action="store_true")
    p = sub.add_parser("profile", help="profile saga's hot path with pyinstrument")
    p.set_defaults(func=profile)
    p.add_argument("--out", default="bench-profile", help="directory for the reports")
    p.add_argument("--sagas", type=int, default=2000)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument(
        "--scenarios",
        default="throughput,latency",
        help="any of throughput, latency, recovery, parked",
    )
    p.add_argument("--workdir")
    _scale.add_parser(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
