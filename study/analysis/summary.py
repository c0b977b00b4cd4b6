"""The paper's headline form: target vs each baseline, "+x% preferred, -y% hallucination".

Definitions (over main-trial votes of non-excluded participants that compared target T with
baseline B; ties are not wins):

* ``quality_pref = wins_T / wins_B - 1``. "+x%" means T was preferred x% more often than B
  among decisive votes (equivalently, the odds of preferring T are 1 + x/100). 0 = parity;
  undefined (NaN) when B never wins.
* ``halluc_rel = rate_T / rate_B - 1`` where ``rate_M`` is the share of those same votes in which
  M's output was flagged. "-y%" means T's outputs were flagged y% less often than B's on the
  same items by the same raters. Undefined (NaN) when B was never flagged.

Both intervals are 95% participant cluster bootstrap percentile intervals (rounds in which the
ratio is undefined are skipped). The p-values are the Holm-adjusted sign test and McNemar test
from ``pairwise_tests.csv`` and ``hallucination_pairwise.csv``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from study.analysis.bootstrap import percentile_interval

SUMMARY_COLUMNS = ["target", "baseline", "n_votes", "wins_target", "wins_baseline", "ties",
                   "win_rate_target", "quality_pref", "quality_ci_low", "quality_ci_high",
                   "p_holm_preference", "halluc_rate_target", "halluc_rate_baseline",
                   "halluc_rel", "halluc_ci_low", "halluc_ci_high", "p_holm_hallucination"]


def _ratio_minus_one(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1) - 1, np.nan)


def _per_participant(pair: pd.DataFrame, target_is_a: bool, participants: list[str]) -> np.ndarray:
    """``(n_participants, 5)``: wins_T, wins_B, flagged_T, flagged_B, votes."""
    t, b = ("a", "b") if target_is_a else ("b", "a")
    frame = pd.DataFrame({
        "pid": pair["participant_id"], "wins_t": pair["label"] == t,
        "wins_b": pair["label"] == b, "flag_t": pair[f"halluc_{t}"],
        "flag_b": pair[f"halluc_{b}"], "n": 1,
    }).groupby("pid").sum()
    return frame.reindex(participants, fill_value=0).to_numpy(float)


def target_summary(votes: pd.DataFrame, target: str, methods: list[str], weights: np.ndarray,
                   participants: list[str], pairwise: pd.DataFrame,
                   mcnemar: pd.DataFrame) -> pd.DataFrame:
    """One row per baseline (every other method), in the column order of SUMMARY_COLUMNS."""
    rows = []
    for baseline in sorted(m for m in methods if m != target):
        a, b = sorted((target, baseline))
        pair = votes[(votes["method_a"] == a) & (votes["method_b"] == b)]
        counts = _per_participant(pair, target == a, participants)
        wins_t, wins_b, flag_t, flag_b, n = counts.sum(axis=0)
        boot = weights @ counts
        q_low, q_high = percentile_interval(_ratio_minus_one(boot[:, 0], boot[:, 1])[:, None])
        h_low, h_high = percentile_interval(_ratio_minus_one(boot[:, 2], boot[:, 3])[:, None])
        key = (pairwise["method_a"] == a) & (pairwise["method_b"] == b)
        key_h = (mcnemar["method_a"] == a) & (mcnemar["method_b"] == b)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows.append([
                target, baseline, int(n), int(wins_t), int(wins_b), int(n - wins_t - wins_b),
                wins_t / (wins_t + wins_b) if wins_t + wins_b else np.nan,
                float(_ratio_minus_one(np.array(wins_t), np.array(wins_b))), q_low[0], q_high[0],
                float(pairwise.loc[key, "p_holm"].iloc[0]),
                flag_t / n if n else np.nan, flag_b / n if n else np.nan,
                float(_ratio_minus_one(np.array(flag_t), np.array(flag_b))), h_low[0], h_high[0],
                float(mcnemar.loc[key_h, "p_holm"].iloc[0]),
            ])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
