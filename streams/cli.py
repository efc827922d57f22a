"""``riskmon`` command line: one dispatcher, one module per command.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and is imported
only when its command runs, so ``riskmon bench engine`` never imports faust.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("streams.driver.demo", "run a simulated venue and crash in-process, with a live view"),
    "replay": ("streams.driver.replay", "replay historical prices through a venue; write a report"),
    "worker": ("streams.worker", "run a Faust/Kafka worker"),
    "simulate": ("streams.producers.simulate", "publish a synthetic venue to Kafka"),
    "top": ("streams.adapters.top", "print the live watch list from Redis"),
    "bench": ("streams.bench.cli", "benchmarks: engine, e2e"),
    "warm-up": (
        "streams.driver.warmup",
        "compile the engine's kernels once (make demo/test do it)",
    ),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riskmon", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        if argv[:1] == [name]:
            # Only the chosen command's module is imported (keeps start-up light).
            try:
                importlib.import_module(module_name).add_arguments(cmd)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
