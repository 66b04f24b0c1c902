"""``main``: parse, open the store the way the command needs it, run, print, exit.

User errors (an unknown id, a bad URL, a file that is not a saga store, a refused
request, ...) print one line on stderr and exit with status 1; usage errors (found by
the parser) exit with 2. Neither shows a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio
import msgspec

from saga._cli._commands import READERS, Output
from saga._cli._parser import DEFAULT_URL, build_parser
from saga._cli._steer import WRITERS
from saga._errors import SagaError, StoreError
from saga._store import open_store

__all__ = ["main"]


def _url(args: argparse.Namespace) -> tuple[str, bool]:
    """The store URL, and whether it is only the default."""
    if args.db:
        return args.db, False
    env = os.environ.get("SAGA_DB")
    if env:
        return env, False
    return DEFAULT_URL, True


async def _run(args: argparse.Namespace) -> Output:
    url, defaulted = _url(args)
    writer = WRITERS.get(args.command)
    store = open_store(url, access="client" if writer else "read")
    try:
        await store.open()
    except StoreError as error:
        if defaulted:
            raise StoreError(f"{error} (no --db given and SAGA_DB is not set)") from None
        raise
    try:
        command = writer if writer is not None else READERS[args.command]
        output: Output = await command(store, args)
        return output
    finally:
        await store.close()


def _print(output: Output, as_json: bool) -> None:
    if as_json:
        text = msgspec.json.format(msgspec.json.encode(output.data), indent=2).decode()
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in output.text))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``saga`` command line; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 on a user error (printed as one line on stderr); a usage error
        exits from the parser with status 2.
    """
    args = build_parser().parse_args(argv)
    try:
        output = anyio.run(_run, args)
        _print(output, getattr(args, "json", False))
    except (SagaError, ValueError, TypeError, OSError) as error:
        if isinstance(error, BrokenPipeError):  # e.g. 'saga history x | head'
            _quiet_stdout()
            return 0
        message = str(error) or type(error).__name__
        if isinstance(error, OSError) and error.filename and error.strerror:
            message = f"{error.filename}: {error.strerror}"
        sys.stderr.write(f"saga {args.command}: error: {message}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
