"""`python -m study.analysis analyze | power | simulate-calibration` (the statistics alone)."""
from __future__ import annotations

import argparse
import sys

from study.analysis import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.analysis", description=__doc__)
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
