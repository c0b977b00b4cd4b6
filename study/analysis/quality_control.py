"""Quality control: is the data fit to be analysed, and who was excluded and why.

One long table (``check, population, value, n, ci_low, ci_high, p_value, detail``) so that checks
with different shapes sit in one CSV. ``population`` is ``all`` (before exclusions) or ``kept``.

* Attention checks: pass rate over scorable attention trials, Wilson interval; every excluded
  participant gets its own row with the reason.
* Test-retest: a ``repeat`` trial re-shows a participant's earlier main trial (same item and pair,
  sides swapped); it is consistent when the side-invariant label (method_a, method_b or tie) is
  the same. Wilson interval.
* Position bias: exact binomial test of "left chosen" among decisive votes against 1/2; plus the
  participants who chose one side in more than 85% of >= 10 decisive votes (straight-lining).
* Response time: quantiles of answered_at - served_at and the share faster than 1.5 s.
* Inter-rater agreement: Krippendorff's alpha (nominal) on the side-invariant label, raters =
  participants, units = (item, method pair); never on left/right, whose meaning differs per rater.
"""
from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
from scipy.stats import binomtest

from study.analysis.pairwise import wilson_interval
from study.analysis.votes import CANONICAL_LABELS

QC_COLUMNS = ["check", "population", "value", "n", "ci_low", "ci_high", "p_value", "detail"]
FAST_RESPONSE_S = 1.5
STRAIGHT_LINE_SHARE = 0.85
STRAIGHT_LINE_MIN_VOTES = 10


def _row(check: str, population: str, value: float, n: int = 0, ci: tuple = (np.nan, np.nan),
         p_value: float = np.nan, detail: str = "") -> list:
    return [check, population, value, n, ci[0], ci[1], p_value, detail]


def _share_row(check: str, population: str, successes: int, n: int, detail: str,
               p_value: float = np.nan) -> list:
    low, high = wilson_interval(np.array([successes]), np.array([n]))
    return _row(check, population, successes / n if n else np.nan, n, (low[0], high[0]),
                p_value, detail)


def attention_rows(quality: pd.DataFrame) -> list[list]:
    """Pooled attention pass rate, exclusion counts and one row per excluded participant."""
    passed, trials = int(quality["attention_passed"].sum()), int(quality["attention_trials"].sum())
    rows = [_share_row("attention_pass_rate", "all", passed, trials,
                       "choice == expected_choice over scorable attention trials"),
            _row("participants", "all", len(quality), len(quality)),
            _row("participants_excluded", "all", int(quality["excluded"].sum()), len(quality))]
    for _, p in quality[quality["excluded"]].iterrows():
        rows.append(_row("excluded_participant", "all", 1, int(p["n_votes"]),
                         detail=f"{p['participant_id']}: {p['reason']}"))
    return rows


def retest_consistency(votes: pd.DataFrame) -> tuple[int, int, int]:
    """(consistent, matched, unmatched) repeat trials; see the module docstring."""
    key = ["participant_id", "item_id", "method_a", "method_b"]
    originals = (votes[votes["trial_kind"] == "main"].sort_values("served_at")
                 .drop_duplicates(key)[key + ["label"]])
    repeats = votes[votes["trial_kind"] == "repeat"]
    matched = repeats.merge(originals, on=key, suffixes=("", "_original"))
    consistent = int((matched["label"] == matched["label_original"]).sum())
    return consistent, len(matched), len(repeats) - len(matched)


def krippendorff_alpha(votes: pd.DataFrame) -> tuple[float, int, str]:
    """(alpha, units rated at least twice, note) on main votes; NaN when undefined."""
    units = votes.assign(unit=votes["item_id"] + "|" + votes["method_a"] + "|" + votes["method_b"])
    units = units.drop_duplicates(["participant_id", "unit"])
    shared = units.groupby("unit")["participant_id"].transform("size") >= 2
    units = units[shared]
    n_units = units["unit"].nunique()
    if n_units == 0:
        return float("nan"), 0, "no unit rated by two participants"
    if units["label"].nunique() < 2:
        return float("nan"), n_units, "every rating has the same label: alpha undefined"
    codes = units["label"].map({label: k for k, label in enumerate(CANONICAL_LABELS)})
    matrix = (units.assign(code=codes).pivot(index="participant_id", columns="unit",
                                             values="code").to_numpy(float))
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal",
                                    value_domain=list(range(len(CANONICAL_LABELS))))), n_units, (
        "nominal, labels method_a / method_b / tie, units = item x pair")


def quality_control(all_votes: pd.DataFrame, kept: pd.DataFrame,
                    quality: pd.DataFrame) -> pd.DataFrame:
    """The QC table: attention and exclusions on everyone, the other checks on kept votes."""
    rows = attention_rows(quality)

    consistent, matched, unmatched = retest_consistency(kept)
    rows.append(_share_row("test_retest_consistency", "kept", consistent, matched,
                           f"same label on repeat (sides swapped); {unmatched} repeats unmatched"))

    judged = kept[kept["trial_kind"] != "attention"]
    decisive = judged[judged["decisive"]]
    n_left, n = int(decisive["left_chosen"].sum()), len(decisive)
    p_left = float(binomtest(n_left, n, 0.5).pvalue) if n else np.nan
    rows.append(_share_row("position_bias_left_share", "kept", n_left, n,
                           "exact binomial test of left chosen vs 1/2 (decisive votes)", p_left))
    per_person = decisive.groupby("participant_id")["left_chosen"].agg(["mean", "size"])
    lopsided = per_person[(per_person["size"] >= STRAIGHT_LINE_MIN_VOTES)
                          & ((per_person["mean"] > STRAIGHT_LINE_SHARE)
                             | (per_person["mean"] < 1 - STRAIGHT_LINE_SHARE))]
    rows.append(_row("position_straight_liners", "kept", len(lopsided), len(per_person),
                     detail=", ".join(map(str, lopsided.index)) or "none"))

    times = kept["response_s"].dropna()
    for q in (0.1, 0.5, 0.9):
        rows.append(_row(f"response_time_s_p{int(q * 100)}", "kept",
                         float(times.quantile(q)) if len(times) else np.nan, len(times)))
    rows.append(_share_row("response_time_fast_share", "kept",
                           int((times < FAST_RESPONSE_S).sum()), len(times),
                           f"answered in under {FAST_RESPONSE_S} s"))

    alpha, n_units, note = krippendorff_alpha(kept[kept["trial_kind"] == "main"])
    rows.append(_row("krippendorff_alpha", "kept", alpha, n_units, detail=note))
    return pd.DataFrame(rows, columns=QC_COLUMNS)
