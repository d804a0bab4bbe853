"""Benchmarks: each module here measures one thing and records it in ``bench/results.json``.

A benchmark module has ``main() -> dict`` that runs, prints what it measured and records its
figures with ``bench.common.record``; ``python -m bench`` runs them all, ``python -m bench
render`` one of them.
"""
