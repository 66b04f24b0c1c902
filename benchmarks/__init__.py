"""Benchmarks: saga side by side with DBOS Transact on SQLite, and a raw SQLite floor.

Run ``python -m benchmarks run --quick`` (see ``benchmarks/README.md``).
"""
