"""``python -m bench [NAME ...]``: run every benchmark in ``bench/`` in turn, or the ones named
(each in a process of its own when there are several)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
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
    if len(chosen) == 1:
        print(f"== {chosen[0]}", flush=True)
        importlib.import_module(f"bench.{chosen[0]}").main()
        return 0
    # Each in a process of its own: one benchmark's memory (read as peak RSS by the next),
    # environment and loaded modules must not weigh on another's figures.
    failed = [
        name
        for name in chosen
        if subprocess.run([sys.executable, "-m", "bench", name], check=False).returncode != 0
    ]
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
