"""Loading, validating and excluding votes: the one canonical table every analysis reads.

A vote is stored in screen terms (left/right). The analyses need *canonical* terms that do not
depend on the randomised side: the method pair sorted alphabetically (``method_a < method_b``) and
the outcome for ``method_a``. Everything downstream reads only the canonical columns, so position
never leaks into a test except in the explicit position-bias check.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = (
    "participant_id", "item_id", "method_left", "method_right", "choice",
    "halluc_left", "halluc_right", "trial_kind", "served_at", "answered_at",
)
OPTIONAL_COLUMNS = ("expected_choice", "latency_ms")
CHOICES = ("left", "right", "both_good", "both_bad")
TRIAL_KINDS = ("main", "attention", "repeat")
CANONICAL_LABELS = ("a", "b", "tie")
"""Side-invariant label of a vote: method_a preferred, method_b preferred, or no preference."""


class VotesError(ValueError):
    """The votes table cannot be analysed as given (the message says what to fix)."""


def empty_votes() -> pd.DataFrame:
    """A votes table with the canonical columns and no rows (what an empty export means)."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS})


def read_votes_csv(path: str | Path) -> pd.DataFrame:
    """Read an exported votes CSV; a zero-byte file is an empty study, not an error."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.strip():
        warnings.warn(f"{path} is empty: analysing zero votes", stacklevel=2)
        return empty_votes()
    return pd.read_csv(io.StringIO(text), dtype={"participant_id": str, "item_id": str,
                                                 "expected_choice": str})


def _flag_column(df: pd.DataFrame, name: str) -> pd.Series:
    values = pd.to_numeric(df[name].replace({"": np.nan, "True": 1, "False": 0, "true": 1,
                                             "false": 0}), errors="coerce").fillna(0)
    if not values.isin([0, 1]).all():
        bad = df.loc[~values.isin([0, 1]), name].unique()[:5]
        raise VotesError(f"column {name!r} must be 0/1, found {list(bad)}")
    return values.astype(int)


def _text_column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name].fillna("").astype(str).str.strip()


def validate_votes(raw: pd.DataFrame, methods: list[str] | None = None) -> pd.DataFrame:
    """Check the canonical columns and add the side-invariant ones.

    Raises :class:`VotesError` for missing columns or choice/trial-kind values outside the
    schema. With ``methods`` given, main and repeat votes naming any other method are dropped with
    a warning (attention trials may use stimuli outside the method list, so they are kept).

    Added columns: ``method_a``, ``method_b`` (sorted pair), ``label`` (``a``/``b``/``tie``),
    ``score_a`` (1, 0.5, 0: ties count half), ``decisive``, ``a_was_left``, ``halluc_a``,
    ``halluc_b``, ``left_chosen``, ``response_s`` (answered_at - served_at, else latency_ms).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise VotesError(f"votes table is missing columns {missing}; "
                         f"expected at least {list(REQUIRED_COLUMNS)}")
    df = raw.copy()
    for name in ("participant_id", "item_id", "method_left", "method_right", "choice",
                 "trial_kind"):
        df[name] = _text_column(df, name)
    df["choice"] = df["choice"].str.lower()
    df["trial_kind"] = df["trial_kind"].str.lower()
    for name, allowed in (("choice", CHOICES), ("trial_kind", TRIAL_KINDS)):
        bad = sorted(set(df[name]) - set(allowed))
        if bad:
            raise VotesError(f"column {name!r} has values {bad[:5]} outside {list(allowed)}")
    df["expected_choice"] = (_text_column(df, "expected_choice").str.lower()
                             if "expected_choice" in df else "")
    for name in ("halluc_left", "halluc_right"):
        df[name] = _flag_column(df, name)

    compared = df["trial_kind"] != "attention"
    same = compared & (df["method_left"] == df["method_right"])
    if same.any():
        warnings.warn(f"dropping {int(same.sum())} votes comparing a method with itself",
                      stacklevel=2)
        df = df[~same]
        compared = compared[~same]
    if methods is not None:
        known = set(methods)
        unknown = compared & ~(df["method_left"].isin(known) & df["method_right"].isin(known))
        if unknown.any():
            names = sorted((set(df.loc[unknown, "method_left"])
                            | set(df.loc[unknown, "method_right"])) - known)
            warnings.warn(f"dropping {int(unknown.sum())} votes with unknown methods {names} "
                          f"(known: {sorted(known)})", stacklevel=2)
            df = df[~unknown]

    a_left = df["method_left"] <= df["method_right"]
    df["a_was_left"] = a_left
    df["method_a"] = df["method_left"].where(a_left, df["method_right"])
    df["method_b"] = df["method_right"].where(a_left, df["method_left"])
    chose_a = (df["choice"] == "left") == a_left
    df["decisive"] = df["choice"].isin(["left", "right"])
    df["label"] = np.where(~df["decisive"], "tie", np.where(chose_a, "a", "b"))
    df["score_a"] = df["label"].map({"a": 1.0, "b": 0.0, "tie": 0.5})
    df["halluc_a"] = df["halluc_left"].where(a_left, df["halluc_right"])
    df["halluc_b"] = df["halluc_right"].where(a_left, df["halluc_left"])
    df["left_chosen"] = df["choice"] == "left"
    served = pd.to_datetime(df["served_at"], utc=True, errors="coerce", format="ISO8601")
    answered = pd.to_datetime(df["answered_at"], utc=True, errors="coerce", format="ISO8601")
    df["served_at"], df["answered_at"] = served, answered
    response_s = (answered - served).dt.total_seconds()
    if "latency_ms" in df:
        response_s = response_s.fillna(pd.to_numeric(df["latency_ms"], errors="coerce") / 1000)
    df["response_s"] = response_s.astype(float)
    return df.reset_index(drop=True)


def methods_in(votes: pd.DataFrame) -> list[str]:
    """Methods compared in main trials, sorted (the order of every per-method table)."""
    main = votes[votes["trial_kind"] == "main"]
    return sorted(set(main["method_a"]) | set(main["method_b"]))


@dataclass(frozen=True)
class ExclusionRule:
    """Pre-registered participant exclusion, applied before every main analysis.

    ``min_attention_pass``: a participant whose share of passed attention checks is below this is
    excluded with all their votes (participants with no scorable attention trial are kept and
    reported as such). ``min_median_response_s``: optionally exclude participants whose median
    response time is below this many seconds (click-through).
    """

    min_attention_pass: float = 0.8
    min_median_response_s: float | None = None


def participant_quality(votes: pd.DataFrame, rule: ExclusionRule) -> pd.DataFrame:
    """One row per participant: attention record, median response time, exclusion and reason.

    An attention trial passes when ``choice == expected_choice``; trials without an expected
    choice cannot be scored and are not counted.
    """
    columns = ["participant_id", "n_votes", "attention_trials", "attention_passed",
               "attention_pass_rate", "median_response_s", "excluded", "reason"]
    if votes.empty:
        return pd.DataFrame(columns=columns)
    scorable = votes[(votes["trial_kind"] == "attention") & (votes["expected_choice"] != "")]
    passed = (scorable["choice"] == scorable["expected_choice"]).groupby(
        scorable["participant_id"]).agg(["size", "sum"])
    table = votes.groupby("participant_id").agg(n_votes=("choice", "size"),
                                                median_response_s=("response_s", "median"))
    table["attention_trials"] = passed["size"].reindex(table.index).fillna(0).astype(int)
    table["attention_passed"] = passed["sum"].reindex(table.index).fillna(0).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["attention_pass_rate"] = table["attention_passed"] / table["attention_trials"]
    reasons = []
    for pid, row in table.iterrows():
        why = []
        if row["attention_trials"] > 0 and row["attention_pass_rate"] < rule.min_attention_pass:
            why.append(f"attention pass rate {row['attention_pass_rate']:.2f} "
                       f"< {rule.min_attention_pass:.2f}")
        if (rule.min_median_response_s is not None
                and row["median_response_s"] < rule.min_median_response_s):
            why.append(f"median response {row['median_response_s']:.1f} s "
                       f"< {rule.min_median_response_s:.1f} s")
        reasons.append("; ".join(why))
    table["reason"] = reasons
    table["excluded"] = table["reason"] != ""
    table.loc[(table["attention_trials"] == 0) & ~table["excluded"], "reason"] = (
        "kept: no scorable attention trial")
    return table.reset_index()[columns]


def apply_exclusions(votes: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """Drop every vote of the participants ``participant_quality`` marked as excluded."""
    excluded = set(quality.loc[quality["excluded"], "participant_id"])
    return votes[~votes["participant_id"].isin(excluded)].reset_index(drop=True)
