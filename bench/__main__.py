"""``python -m bench [--quick] [--lab] [name ...]``: run every bench module's ``main(quick)`` (or the named
ones)."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil

import bench


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run, rough numbers")
    parser.add_argument(
        "--lab", action="store_true", help="also the parts off by default that need the lab (bench/engine's)"
    )
    parser.add_argument("names", nargs="*", help="bench modules to run (default: all)")
    args = parser.parse_args()
    if args.lab:  # an environment variable, so main(quick) keeps one signature for every module
        os.environ["PHOENIX_BENCH_LAB"] = "1"
    names = args.names or sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name != "__main__")
    for name in names:
        importlib.import_module(f"bench.{name}").main(quick=args.quick)


if __name__ == "__main__":
    main()
