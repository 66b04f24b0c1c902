"""Child processes for the tests: the environment a test script runs in, and `Process`
(start, read, signal, reap) for the multi-process tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["TESTS", "Process", "child_env"]

TESTS = Path(__file__).resolve().parent
"""The ``tests`` folder: the shared helpers (``_pg.py``, ``_wait.py``, ...) live here."""


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a Python script of the tests run as a child process: this one's,
    with ``tests/`` first on ``PYTHONPATH``, so that a script in a subfolder imports the
    shared helpers as the tests do (pytest puts ``tests/`` on ``sys.path`` through the
    conftest; a child process starts with only its script's own folder)."""
    paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


class Process:
    """A Python script run as a child process, its output read by two threads."""

    def __init__(self, args: list[str]) -> None:
        argv = [sys.executable, *args]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.lines)),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.errors)),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _drain(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"worker never printed {prefix!r}; stderr:\n" + "\n".join(self.errors[-30:])
                )
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for thread in self._threads:
            thread.join(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
