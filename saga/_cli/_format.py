"""Text for people: times, tables and wrapped lines that fit an 80-column terminal."""

from __future__ import annotations

import datetime
import json
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = [
    "WIDTH",
    "ago",
    "duration",
    "fields",
    "fit",
    "iso",
    "offset",
    "plain",
    "show_json",
    "table",
    "wrap",
]

WIDTH = 80


def plain(value: Any) -> Any:
    """``value`` as JSON-ready builtins (structs to dicts, bytes to base64)."""
    return msgspec.to_builtins(value)


def show_json(value: Any) -> str:
    """Compact, readable JSON on one line (for states, payloads, record data)."""
    return json.dumps(plain(value), ensure_ascii=False, separators=(", ", ": "))


def iso(at: float | None, *, ms: bool = False) -> str:
    """Epoch seconds as UTC, e.g. ``2025-06-01 12:00:00Z``."""
    if at is None:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    except (ValueError, OverflowError, OSError):  # a damaged store's time: NaN, out of range
        return "?"
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if ms:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def duration(seconds: float) -> str:
    """A short, readable length of time: ``0.012s``, ``12.5s``, ``3m04s``, ``2h05m``, ``3d04h``."""
    if not math.isfinite(seconds):  # a damaged store's time
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.3f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def offset(seconds: float) -> str:
    """A time relative to a saga's start: ``+0.012s``, ``+3m04s``, or ``-2.0s`` before it."""
    return ("-" if seconds < 0 else "+") + duration(abs(seconds))


def ago(at: float | None, now: float) -> str:
    """``5m04s ago`` or ``in 12s``, to the second (``now`` within a second reads ``now``)."""
    if at is None:
        return "-"
    delta = now - at
    if not math.isfinite(delta):  # a damaged store's time
        return "?"
    if abs(delta) < 1:
        return "now"
    length = f"{int(abs(delta))}s" if abs(delta) < 60 else duration(abs(delta))
    return f"{length} ago" if delta > 0 else f"in {length}"


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` in lines of at most ``width`` characters, continuation lines indented."""
    lines = textwrap.wrap(text, width=width, subsequent_indent=indent, break_on_hyphens=False,
                          drop_whitespace=True)  # fmt: skip
    return lines or [""]


def fields(pairs: Sequence[tuple[str, str]], label_width: int = 10) -> list[str]:
    """``label  value`` lines, long values wrapped under the value column."""
    lines = []
    pad = " " * label_width
    for label, value in pairs:
        wrapped = wrap(value, WIDTH - label_width, "")
        lines.append(f"{label:<{label_width}}{wrapped[0]}".rstrip())
        lines.extend(f"{pad}{more}" for more in wrapped[1:])
    return lines


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    shrink: Sequence[int] = (),
    wrap_last: bool = False,
) -> list[str]:
    """A plain-text table of at most `WIDTH` columns.

    Args:
        headers: column titles.
        rows: cell texts.
        right: indexes of right-aligned columns (numbers).
        shrink: indexes of columns that may be cut (with an ellipsis) to fit.
        wrap_last: wrap the last column onto continuation lines instead of cutting it.
    """
    count = len(headers)
    widths = [max([len(headers[i]), *(len(r[i]) for r in rows)]) for i in range(count)]
    floor = {i: max(4, min(len(headers[i]), widths[i])) for i in range(count)}
    last = count - 1
    if wrap_last:
        floor[last] = max(floor[last], 20)
    total = sum(widths) + count - 1
    shrinkable = [*shrink, last] if wrap_last else list(shrink)
    while total > WIDTH:
        candidates = [i for i in shrinkable if widths[i] > floor[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        total -= 1

    def cell(i: int, text: str) -> str:
        text = fit(text, widths[i])
        return text.rjust(widths[i]) if i in right else text.ljust(widths[i])

    lines = [" ".join(cell(i, h) for i, h in enumerate(headers)).rstrip()]
    for r in rows:
        if not wrap_last:
            lines.append(" ".join(cell(i, r[i]) for i in range(count)).rstrip())
            continue
        head = " ".join(cell(i, r[i]) for i in range(last))
        pad = " " * (len(head) + 1)
        parts = wrap(r[last], widths[last])
        lines.append(f"{head} {parts[0]}".rstrip())
        lines.extend(f"{pad}{part}" for part in parts[1:])
    return lines
