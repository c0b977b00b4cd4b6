"""`python -m pipeline bench`: placeholder replaced below."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark methods (cost, tiling, quality) and write results/")
    p.set_defaults(func=lambda args: 0)
