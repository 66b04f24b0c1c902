"""Profile one saga run with pyinstrument: where the event loop's thread spends its time.

pyinstrument samples the main thread only. SQLite itself runs in aiosqlite's thread, so
the time the main thread spends waiting for a commit shows up as the event loop's
``select``; everything else on the main thread is Python work of the runtime, the
benchmark driver or the event loop.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["profiled", "top_functions"]


def _name(frame: Any) -> str:
    return f"{frame.function} ({frame.file_path_short}:{frame.line_no})"


def top_functions(root: Any, limit: int = 40) -> list[dict[str, Any]]:
    """Self time per function across the whole call tree, largest first."""
    own: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    stack = [(root, frozenset[str]())]
    while stack:
        frame, above = stack.pop()
        if frame.is_synthetic:  # "[self]": already in the parent's total_self_time
            continue
        name = _name(frame)
        own[name] += frame.total_self_time
        if name not in above:  # count recursion once
            total[name] += frame.time
        stack.extend((child, above | {name}) for child in frame.children)
    whole = root.time or 1.0
    ranked = sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    return [
        {
            "function": name,
            "self_s": round(seconds, 4),
            "self_pct": round(100 * seconds / whole, 1),
            "total_pct": round(100 * total[name] / whole, 1),
        }
        for name, seconds in ranked
    ]


def profiled(
    workload: Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]],
    params: dict[str, Any],
    tmp: str,
    prefix: str,
) -> dict[str, Any]:
    """Run ``workload`` under pyinstrument; write ``prefix``.txt/.html/-top.json."""
    import anyio
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        result = anyio.run(workload, params, tmp)
    finally:
        profiler.stop()
    with open(prefix + ".txt", "w") as f:
        f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    with open(prefix + ".html", "w") as f:
        f.write(profiler.output_html())
    root = profiler.last_session.root_frame() if profiler.last_session else None
    top = top_functions(root) if root is not None else []
    with open(prefix + "-top.json", "w") as f:
        json.dump(top, f, indent=1)
    return {**result, "profile": prefix}
