"""``python -m bench [NAME ...]``: run every benchmark in ``bench/`` in turn, or the ones named."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench

# Modules of the package that are not benchmarks.
NOT_BENCHMARKS = {"common", "__main__"}


def benchmark_names() -> list[str]:
    """The benchmark modules in ``bench/``, in alphabetical order."""
    return sorted(
        module.name
        for module in pkgutil.iter_modules(bench.__path__)
        if module.name not in NOT_BENCHMARKS and not module.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    """Run the benchmarks named in ``argv`` (all of them when none is named)."""
    available = benchmark_names()
    chosen = argv or available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        print(
            f"unknown benchmark: {', '.join(unknown)} (available: {', '.join(available)})",
            file=sys.stderr,
        )
        return 2
    for name in chosen:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
