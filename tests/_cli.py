"""Running the ``saga`` command line as a real subprocess (``python -m saga``) in tests.

Not a test module: pytest collects only ``test_*.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

SERVICE = Path(__file__).with_name("_cli_service.py")
TIMEOUT = 60.0


def env(**extra: str) -> dict[str, str]:
    """The environment for a CLI run: no SAGA_DB unless given, an 80-column terminal."""
    base = {k: v for k, v in os.environ.items() if k != "SAGA_DB"}
    return {**base, "COLUMNS": "80", **extra}


def url(db: Path) -> str:
    return f"sqlite:///{db}"


def _argv(args: Sequence[str], db: Path | None) -> list[str]:
    return [sys.executable, "-m", "saga", *(["--db", url(db)] if db else []), *args]


def run(*args: str, db: Path | None = None, cwd: Path | None = None,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``python -m saga [--db URL] ARGS``."""
    return subprocess.run(_argv(args, db), capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=cwd, env=env(**(extra_env or {})), check=False)  # fmt: skip


def run_many(argvs: Sequence[Sequence[str]], db: Path | None = None, cwd: Path | None = None,
             ) -> list[subprocess.CompletedProcess[str]]:  # fmt: skip
    """Run several commands at once (to keep the tests fast); their results, in order."""
    procs = [
        (argv, subprocess.Popen(_argv(argv, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=cwd, env=env()))
        for argv in argvs
    ]  # fmt: skip
    done = []
    for argv, proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done


def succeeded(done: subprocess.CompletedProcess[str]) -> str:
    """A command's stdout, once it is known to have succeeded quietly on stderr."""
    assert (done.returncode, done.stderr) == (0, ""), done
    if "--json" not in done.args:
        fits(done.stdout)
    return done.stdout


def failed(done: subprocess.CompletedProcess[str]) -> str:
    """A command's stderr, once it is known to have failed as a user error: exit status 1,
    one line on stderr, nothing on stdout, no traceback."""
    assert done.returncode == 1, done
    assert done.stdout == "", done
    assert done.stderr.splitlines(keepends=True) == [done.stderr], done.stderr
    assert done.stderr.endswith("\n")
    assert "Traceback" not in done.stderr
    return done.stderr


def ok(*args: str, db: Path | None = None, **kwargs: Any) -> str:
    """Run a command that must succeed quietly on stderr; return its stdout."""
    return succeeded(run(*args, db=db, **kwargs))


def ok_json(*args: str, db: Path | None = None) -> Any:
    """Run a command with ``--json``: stdout must be one JSON document and nothing else."""
    return json.loads(succeeded(run(*args, "--json", db=db)))


def fails(*args: str, db: Path | None = None, **kwargs: Any) -> str:
    """Run a command that must fail as a user error (see `failed`); return its stderr."""
    return failed(run(*args, db=db, **kwargs))


def fits(text: str, width: int = 80) -> None:
    """Every line of human output fits an 80-column terminal."""
    wide = [line for line in text.splitlines() if len(line) > width]
    assert wide == [], wide


def many_json(argvs: Sequence[Sequence[str]], db: Path) -> list[Any]:
    """Run several ``--json`` commands at once; their parsed outputs, in order."""
    return [json.loads(succeeded(d)) for d in run_many([[*a, "--json"] for a in argvs], db)]


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` (it runs CLI commands) until it holds; a generous deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout} s: {check.__doc__ or check}")
        time.sleep(0.1)


def status(db: Path, saga_id: str) -> str:
    found: str = ok_json("show", saga_id, db=db)["saga"]["status"]
    return found


class Service:
    """``_cli_service.py DB MODE`` in its own process; ``serve`` runs until `stop`."""

    def __init__(self, db: Path, mode: str) -> None:
        self.stderr_path = db.with_suffix(f".{mode}.stderr")
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(SERVICE), str(db), mode], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def expect(self, marker: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no {marker!r} from the service\n{self.stderr_path.read_text()}")
            if line is None:
                pytest.fail(f"the service exited before {marker!r}\n"
                            f"{self.stderr_path.read_text()}")  # fmt: skip
            if line == marker:
                return

    def stop(self) -> None:
        """Close its stdin: the service leaves its runtime cleanly and exits 0."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=TIMEOUT)
        self.close()
        assert code == 0, self.stderr_path.read_text()

    def close(self) -> None:
        """Make sure the process is gone and its pipes are closed (after a failed test)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()


def populate(db: Path) -> None:
    done = subprocess.run([sys.executable, str(SERVICE), str(db), "populate"],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
