"""`python -m study`: prepare, serve, simulate, export (the harness) and analyze, power (the statistics)."""
from __future__ import annotations

import argparse
import sys

from study import cli as harness_cli
from study.analysis import cli as analysis_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    harness_cli.register(commands)
    analysis_cli.register(commands)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
