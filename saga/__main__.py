"""``python -m saga`` and the ``saga`` console script: the operator's command line."""

from __future__ import annotations

from saga._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
