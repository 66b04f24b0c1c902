"""The ``saga`` command line: see and steer the sagas in a store, without writing Python.

``_parser`` holds the grammar, ``_commands`` the read commands, ``_steer`` abort and
resume (requests the owning runtime acts on), ``_timeline`` and ``_format`` the text
people read, and ``_main`` ties them together. ``saga/__main__.py`` is the entry point.
"""

from saga._cli._main import main as main

__all__ = ["main"]
