"""`python -m study analyze`, `python -m study power` and `python -m study simulate-calibration`
(also as `python -m study.analysis ...`)."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from study.analysis.argtypes import positive_int
from study.analysis.power import power_table
from study.analysis.report import DEFAULT_TARGET, analyze
from study.analysis.votes import ExclusionRule, VotesError, read_votes_csv


def unit_interval(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a significance level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def share(text: str) -> float:
    """argparse type: a share in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def non_negative(text: str) -> float:
    """argparse type: seconds, >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {value}")
    return value


def database_url(db: str) -> str:
    """A SQLAlchemy URL as given, or an existing SQLite file turned into one (opening a missing
    file would silently create an empty study)."""
    if "://" in db:
        return db
    if not Path(db).is_file():
        raise FileNotFoundError(f"no SQLite database at {db}")
    return f"sqlite:///{Path(db).resolve()}"


def load_votes(args: argparse.Namespace) -> pd.DataFrame:
    if args.votes:
        return read_votes_csv(args.votes)
    from study.db import votes_frame  # the harness's database layer; only needed for --db

    return votes_frame(database_url(args.db))


def run_analyze(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    rule = ExclusionRule(args.min_attention_pass, args.min_median_response_s)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = analyze(load_votes(args), args.out, methods=methods, target=args.target,
                             rule=rule, n_boot=args.bootstrap, seed=args.seed, alpha=args.alpha)
        except (VotesError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(result.summary_markdown)
    print(f"wrote {len(result.files)} files to {result.out_dir}")
    return 0


def run_power(args: argparse.Namespace) -> int:
    try:
        table = power_table(args.effect, methods=args.methods, ties=args.ties,
                            votes_per_participant=args.votes_per_participant, icc=args.icc,
                            alpha=args.alpha, power=args.power)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Exact two-sided sign test, power {args.power}, family alpha {args.alpha} "
          f"(Holm: alpha / pairs), design effect 1 + (m - 1) * icc with m = votes per "
          f"participant per pair")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `analyze` and `power` subcommands."""
    a = subparsers.add_parser("analyze", help="statistics of the collected votes",
                              description="Pairwise tests, Bradley-Terry, hallucination, QC.")
    source = a.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="SQLAlchemy URL or SQLite file of a live study")
    source.add_argument("--votes", help="exported votes CSV")
    a.add_argument("--out", default="results/study", help="output folder")
    a.add_argument("--methods", help="comma-separated method names; votes naming others are "
                                     "dropped with a warning")
    a.add_argument("--target", default=DEFAULT_TARGET, help="method summarised against baselines")
    a.add_argument("--min-attention-pass", type=share, default=0.8,
                   help="exclude participants passing a smaller share of attention checks")
    a.add_argument("--min-median-response-s", type=non_negative, default=None,
                   help="also exclude participants with a faster median response (seconds)")
    a.add_argument("--bootstrap", type=positive_int, default=1000,
                   help="rounds of the resampling parts (rank intervals, Krippendorff's alpha)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--alpha", type=unit_interval, default=0.05,
                   help="family-wise error rate (Holm), in (0, 1)")
    a.set_defaults(func=run_analyze)

    p = subparsers.add_parser("power", help="votes and participants needed",
                              description="Sample size for the per-pair exact sign test.")
    p.add_argument("--effect", type=float, nargs="+", required=True,
                   help="true preference share(s) for the better method, e.g. 0.65")
    p.add_argument("--methods", type=int, default=2, help="number of methods (pairs get Holm)")
    p.add_argument("--ties", type=float, default=0.0, help="expected tie rate")
    p.add_argument("--votes-per-participant", type=int, default=40,
                   help="main trials per participant")
    p.add_argument("--icc", type=float, default=0.0, help="intra-participant correlation")
    p.add_argument("--alpha", type=unit_interval, default=0.05)
    p.add_argument("--power", type=unit_interval, default=0.8)
    p.add_argument("--csv", help="also write the table here")
    p.set_defaults(func=run_power)

    from study.analysis import calibration

    calibration.register(subparsers)
