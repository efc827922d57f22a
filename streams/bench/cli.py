"""``riskmon bench``: ``engine`` (this package) and ``e2e`` (streams/bench/e2e.py, if present).

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, tuple[str, str]] = {
    "engine": ("streams.bench.engine", "risk engine throughput on a synthetic venue (one JSON)"),
    "e2e": ("streams.bench.e2e", "end to end through Kafka and the Faust workers"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (module_name, help_text) in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # e.g. e2e not written yet
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_bench_module=module_name)
        module.add_arguments(cmd)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(args._bench_module)
    return int(module.run(args) or 0)
