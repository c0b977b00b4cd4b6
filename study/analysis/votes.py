"""Loading, validating and excluding votes: the one canonical table every analysis reads.

A vote is stored in screen terms (left/right). The analyses need *canonical* terms that do not
depend on the randomised side: the method pair sorted alphabetically (``method_a < method_b``) and
the outcome for ``method_a``. Everything downstream reads only the canonical columns, so position
never leaks into a test except in the explicit position-bias check.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from study.exclusion import ExclusionRule as _SharedExclusionRule
from study.exclusion import participant_verdicts

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


TEXT_COLUMNS = ("participant_id", "item_id", "method_left", "method_right", "choice",
                "halluc_left", "halluc_right", "trial_kind", "expected_choice")
"""Read as text, so ``TRUE``, ``yes`` or ``007`` reach validation as written."""


def read_votes_csv(path: str | Path) -> pd.DataFrame:
    """Read an exported votes CSV; a zero-byte file is an empty study, not an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise VotesError(f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                         f"offset {error.start}): re-export it as UTF-8") from None
    if not text.strip():
        warnings.warn(f"{path} is empty: analysing zero votes", stacklevel=2)
        return empty_votes()
    try:
        return pd.read_csv(io.StringIO(text.lstrip("\ufeff")),
                           dtype=dict.fromkeys(TEXT_COLUMNS, str))
    except (pd.errors.ParserError, ValueError) as error:
        raise VotesError(f"{path} is not a readable CSV table: "
                         f"{str(error).strip().splitlines()[0]}") from None


FLAG_VALUES = {"1": 1, "1.0": 1, "true": 1, "t": 1, "yes": 1, "y": 1,
               "0": 0, "0.0": 0, "false": 0, "f": 0, "no": 0, "n": 0}
"""Accepted spellings of a hallucination flag (case-insensitive); anything else is refused."""


def _flag_column(df: pd.DataFrame, name: str) -> pd.Series:
    """0/1 flags from 0/1, true/false or yes/no; an empty flag is refused on main and repeat
    trials (a missing judgement is not "not flagged") and read as 0 on attention trials, whose
    flags no analysis uses; any other value ("flagged", 2) is refused."""
    raw = df[name]
    text = raw.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                   else str(v).strip().lower())
    values = text.map(FLAG_VALUES)
    empty = text == ""
    bad = ~empty & values.isna()
    if bad.any():
        raise VotesError(f"column {name!r} must be 0/1 (or true/false, yes/no), found "
                         f"{sorted(set(raw[bad].astype(str)))[:5]}")
    missing = empty & (df["trial_kind"] != "attention")
    if missing.any():
        first = df.loc[missing].iloc[0]
        raise VotesError(f"column {name!r} is empty in {int(missing.sum())} main/repeat votes "
                         f"(first: participant {first['participant_id']!r}, item "
                         f"{first['item_id']!r}); a missing flag is not 'not flagged', so fill "
                         "in 0 or 1")
    return values.fillna(0).astype(int)


def _refuse_empty(df: pd.DataFrame, name: str, rows: pd.Series, what: str) -> None:
    empty = rows & (df[name] == "")
    if empty.any():
        raise VotesError(f"{int(empty.sum())} rows have no {name} ({what}); the first is row "
                         f"{int(np.flatnonzero(empty.to_numpy())[0])} of the table")


def _refuse_duplicates(df: pd.DataFrame) -> None:
    """One vote per (participant, item, method pair, trial kind) on main and repeat trials, and
    no row twice anywhere: a duplicated export would otherwise count twice."""
    columns = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in df]
    exact = df.duplicated(columns, keep="first")
    if exact.any():
        first = df.loc[exact].iloc[0]
        raise VotesError(f"{int(exact.sum())} rows are exact duplicates of earlier rows (first: "
                         f"participant {first['participant_id']!r}, item {first['item_id']!r}); "
                         "remove them before analysing")
    judged = df[df["trial_kind"] != "attention"]
    key = ["participant_id", "item_id", "method_a", "method_b", "trial_kind"]
    repeated = judged.duplicated(key, keep="first")
    if repeated.any():
        first = judged.loc[repeated].iloc[0]
        raise VotesError(f"{int(repeated.sum())} votes repeat an earlier vote of the same "
                         f"participant, item, method pair and trial kind (first: "
                         f"{first['participant_id']!r}, {first['item_id']!r}, "
                         f"{first['method_a']} vs {first['method_b']}, {first['trial_kind']}); "
                         "each may be counted once, so remove the duplicates")


def normalise_method(name: str) -> str:
    """Method names are compared case- and space-insensitively: ``MobilePicasso `` is
    ``mobilepicasso``."""
    return " ".join(str(name).split()).lower()


def _text_column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name].fillna("").astype(str).str.strip()


def validate_votes(raw: pd.DataFrame, methods: list[str] | None = None) -> pd.DataFrame:
    """Check the canonical columns and add the side-invariant ones.

    Raises :class:`VotesError` (one sentence saying what to fix) for missing columns, choice,
    trial-kind or expected-choice values outside the schema, hallucination flags that are not
    0/1, true/false or yes/no (or empty on a main or repeat trial), rows without a participant or
    item id, and duplicated votes. Method names are normalised (case, surrounding and repeated
    spaces). With ``methods`` given, main and repeat votes naming any other method are dropped with
    a warning (attention trials may use stimuli outside the method list, so they are kept).

    Added columns: ``method_a``, ``method_b`` (sorted pair), ``label`` (``a``/``b``/``tie``),
    ``score_a`` (1, 0.5, 0: ties count half), ``decisive``, ``a_was_left``, ``halluc_a``,
    ``halluc_b``, ``left_chosen``, ``response_s`` (answered_at - served_at, else latency_ms).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise VotesError(f"votes table is missing columns {missing}; "
                         f"expected at least {list(REQUIRED_COLUMNS)}")
    df = raw.copy().reset_index(drop=True)
    for name in ("participant_id", "item_id", "method_left", "method_right", "choice",
                 "trial_kind"):
        df[name] = _text_column(df, name)
    df["choice"] = df["choice"].str.lower()
    df["trial_kind"] = df["trial_kind"].str.lower()
    df["method_left"] = df["method_left"].map(normalise_method)
    df["method_right"] = df["method_right"].map(normalise_method)
    df["expected_choice"] = (_text_column(df, "expected_choice").str.lower()
                             if "expected_choice" in df else "")
    for name, allowed in (("choice", CHOICES), ("trial_kind", TRIAL_KINDS),
                          ("expected_choice", CHOICES + ("",))):
        bad = sorted(set(df[name]) - set(allowed))
        if bad:
            raise VotesError(f"column {name!r} has values {bad[:5]} outside "
                             f"{[a for a in allowed if a]}")
    every = pd.Series(True, index=df.index)
    _refuse_empty(df, "participant_id", every, "a vote without its participant cannot be "
                  "clustered, excluded or counted")
    _refuse_empty(df, "item_id", every, "a vote without its item cannot be clustered")
    for side in ("method_left", "method_right"):
        _refuse_empty(df, side, df["trial_kind"] != "attention", "on a main or repeat trial")
    for name in ("halluc_left", "halluc_right"):
        df[name] = _flag_column(df, name)
    if methods is not None:
        methods = [normalise_method(m) for m in methods]

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
    _refuse_duplicates(df)
    return df.reset_index(drop=True)


def methods_in(votes: pd.DataFrame) -> list[str]:
    """Methods compared in main trials, sorted (the order of every per-method table)."""
    main = votes[votes["trial_kind"] == "main"]
    return sorted(set(main["method_a"]) | set(main["method_b"]))


# The pre-registered exclusion rule is defined once, in study/exclusion.py (pure pandas, no
# database), and re-exported here: the server, the export and this analysis apply the same rule.
ExclusionRule = _SharedExclusionRule


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
    verdicts = participant_verdicts(votes, rule).set_index("participant_id")
    table["reason"] = verdicts["reason"].reindex(table.index).fillna("")
    table["excluded"] = table["reason"] != ""
    table.loc[(table["attention_trials"] == 0) & ~table["excluded"], "reason"] = (
        "kept: no scorable attention trial")
    return table.reset_index()[columns]


def apply_exclusions(votes: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """Drop every vote of the participants ``participant_quality`` marked as excluded."""
    excluded = set(quality.loc[quality["excluded"], "participant_id"])
    return votes[~votes["participant_id"].isin(excluded)].reset_index(drop=True)
