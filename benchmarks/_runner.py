"""Runs the scenarios: each run in a fresh worker process, the systems alternating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks._plan import Mode
from benchmarks._report import summarize

__all__ = ["Runner"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Runner:
    """Runs one mode's scenarios for the chosen systems in ``workdir``."""

    def __init__(
        self,
        mode: Mode,
        systems: list[str],
        workdir: str,
        *,
        repeats: int,
        dbos_poll: float,
        profile_dir: str | None = None,
    ) -> None:
        self.mode = mode
        self.systems = systems
        self.workdir = workdir
        self.repeats = repeats
        self.dbos_poll = dbos_poll
        self.profile_dir = profile_dir
        self._seq = 0
        self.failures = 0

    def params(self, scenario: str, system: str) -> dict[str, Any]:
        params = dict(self.mode.sizes[scenario][system])
        if system == "dbos":
            params["poll"] = self.dbos_poll
        return params

    def worker(self, system: str, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
        """One run in a fresh process; its result, or ``{"error": ...}``."""
        self._seq += 1
        out = os.path.join(self.workdir, f"result-{self._seq}.json")
        request = {
            "system": system,
            "scenario": scenario,
            "params": params,
            "out": out,
            "workdir": self.workdir,
        }
        path = os.path.join(self.workdir, f"request-{self._seq}.json")
        with open(path, "w") as f:
            json.dump(request, f)
        began = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks._worker", path],
                cwd=_ROOT,
                capture_output=True,
                text=True,
                timeout=self.mode.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return self._failed(system, scenario, f"timed out after {self.mode.timeout} s")
        if proc.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            return self._failed(system, scenario, f"exit {proc.returncode}: {tail}")
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
        _log(f"  {scenario:<10} {system:<5} done in {time.perf_counter() - began:.1f} s")
        return result

    def _failed(self, system: str, scenario: str, error: str) -> dict[str, Any]:
        self.failures += 1
        _log(f"  {scenario:<10} {system:<5} FAILED: {error}")
        return {"error": error}

    def run(self, scenario: str) -> dict[str, Any]:
        _log(f"[{scenario}]")
        systems = list(self.systems)
        if scenario == "throughput" and "saga" in systems:
            systems.append("raw")
        params = {system: self.params(scenario, system) for system in systems}
        built: dict[str, Any] = {}
        if scenario == "coldstart":
            for system in systems:
                params[system]["db"] = os.path.join(self.workdir, f"{system}-coldstart.db")
                built[system] = self.worker(system, "coldstart-build", params[system])
        runs: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
        errors: dict[str, list[str]] = {}
        for rep in range(self.repeats):
            order = systems if rep % 2 == 0 else [*systems[1::-1], *systems[2:]]
            for system in order:
                if "error" in built.get(system, {}):
                    continue
                result = self.worker(system, scenario, params[system])
                if "error" in result:
                    errors.setdefault(system, []).append(result["error"])
                else:
                    runs[system].append(result)
        out: dict[str, Any] = {
            "params": params,
            "runs": runs,
            "summary": summarize(scenario, runs),
        }
        if built:
            out["built"] = built
        if errors:
            out["errors"] = errors
        return out

    def profile(self, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.profile_dir is not None
        prefix = os.path.join(self.profile_dir, f"saga-{scenario}")
        return self.worker("saga", scenario, {**params, "profile": prefix})
