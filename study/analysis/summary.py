"""The paper's headline form: target vs each baseline, "preferred by x points, y% fewer
hallucinations", with intervals that account for raters and images.

Definitions (over main-trial votes of non-excluded participants that compared target T with
baseline B; ties are not wins):

* ``win_rate_target = wins_T / (wins_T + wins_B)`` with the interval and Holm p-value of
  ``pairwise_tests.csv`` (two-way cluster-robust).
* ``quality_pref = (wins_T - wins_B) / (wins_T + wins_B) = 2 * win_rate_target - 1``: the *net
  preference*, in points of the decisive votes. "+34 pts" means T was chosen in 34 percentage
  points more of the decisive votes than B (a 0.67 win rate). It was ``wins_T / wins_B - 1``
  before, which reads "+101%" for the same 0.67 win rate and is an odds, not a share; the odds
  stay available as ``preference_odds = wins_T / wins_B`` (NaN when B never wins). Its interval
  is the win-rate interval mapped through ``2p - 1``.
* ``halluc_rel = rate_T / rate_B - 1`` where ``rate_M`` is the share of those same votes in which
  M's output was flagged: "-30%" means T's outputs were flagged 30% less often than B's on the
  same items by the same raters (the paper's "fewer hallucinations"). NaN when B was never
  flagged. Interval: ``exp(log ratio +- t * se) - 1`` with the delta-method estimating function
  ``(f_T - rate_T) / rate_T - (f_B - rate_B) / rate_B`` and the two-way cluster-robust variance.
  ``halluc_diff = rate_T - rate_B`` (points) with its interval and the clustered McNemar Holm
  p-value of ``hallucination_pairwise.csv``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from study.analysis.clustered import (INTERVAL_NAME, codes, satterthwaite_df, t_quantile,
                                      twoway_cov)

SUMMARY_COLUMNS = ["target", "baseline", "n_votes", "wins_target", "wins_baseline", "ties",
                   "win_rate_target", "win_rate_ci_low", "win_rate_ci_high", "quality_pref",
                   "quality_ci_low", "quality_ci_high", "preference_odds", "p_holm_preference",
                   "halluc_rate_target", "halluc_rate_baseline", "halluc_diff",
                   "halluc_diff_ci_low", "halluc_diff_ci_high", "halluc_rel", "halluc_ci_low",
                   "halluc_ci_high", "p_holm_hallucination", "n_participants", "n_items",
                   "participants_kept", "participants_excluded", "test", "interval",
                   "correction", "alpha", "bootstrap_rounds"]


def log_ratio_interval(f_t: np.ndarray, f_b: np.ndarray, participant: np.ndarray,
                       item: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(rate_T / rate_B - 1, low, high)`` on matched votes; NaN when a rate is 0."""
    n = len(f_t)
    if n == 0 or f_t.sum() == 0 or f_b.sum() == 0:
        ratio = f_t.mean() / f_b.mean() - 1 if n and f_b.sum() else np.nan
        return float(ratio), np.nan, np.nan
    r_t, r_b = f_t.mean(), f_b.mean()
    z = (f_t - r_t) / r_t - (f_b - r_b) / r_b
    robust = twoway_cov(z[:, None], np.array([[1.0 / n]]), codes(participant), codes(item))
    se = float(np.sqrt(robust.cov[0, 0]))
    q = t_quantile(satterthwaite_df(np.ones(n), codes(participant), codes(item)), level)
    centre = np.log(r_t / r_b)
    return float(r_t / r_b - 1), float(np.exp(centre - q * se) - 1), float(
        np.exp(centre + q * se) - 1)


def target_summary(votes: pd.DataFrame, target: str, methods: list[str],
                   pairwise: pd.DataFrame, mcnemar: pd.DataFrame, alpha: float = 0.05,
                   participants_kept: int = 0, participants_excluded: int = 0) -> pd.DataFrame:
    """One row per baseline (every other method), in the column order of SUMMARY_COLUMNS."""
    rows = []
    for baseline in sorted(m for m in methods if m != target):
        a, b = sorted((target, baseline))
        t_side, b_side = ("a", "b") if target == a else ("b", "a")
        pair = votes[(votes["method_a"] == a) & (votes["method_b"] == b)]
        wins_t, wins_b = int((pair["label"] == t_side).sum()), int((pair["label"] == b_side).sum())
        n = len(pair)
        row = pairwise[(pairwise["method_a"] == a) & (pairwise["method_b"] == b)].iloc[0]
        h_row = mcnemar[(mcnemar["method_a"] == a) & (mcnemar["method_b"] == b)].iloc[0]
        if target == a:
            rate, low, high = row["win_rate_a"], row["ci_low"], row["ci_high"]
            d, d_low, d_high = h_row["rate_diff"], h_row["diff_ci_low"], h_row["diff_ci_high"]
        else:
            rate, low, high = 1 - row["win_rate_a"], 1 - row["ci_high"], 1 - row["ci_low"]
            d, d_low, d_high = (-h_row["rate_diff"], -h_row["diff_ci_high"],
                                -h_row["diff_ci_low"])
        f_t = pair[f"halluc_{t_side}"].to_numpy(float)
        f_b = pair[f"halluc_{b_side}"].to_numpy(float)
        rel, rel_low, rel_high = log_ratio_interval(f_t, f_b, pair["participant_id"].to_numpy(),
                                                    pair["item_id"].to_numpy())
        rows.append(dict(
            target=target, baseline=baseline, n_votes=n, wins_target=wins_t,
            wins_baseline=wins_b, ties=n - wins_t - wins_b, win_rate_target=rate,
            win_rate_ci_low=low, win_rate_ci_high=high, quality_pref=2 * rate - 1,
            quality_ci_low=2 * low - 1, quality_ci_high=2 * high - 1,
            preference_odds=wins_t / wins_b if wins_b else np.nan,
            p_holm_preference=row["p_holm"],
            halluc_rate_target=f_t.mean() if n else np.nan,
            halluc_rate_baseline=f_b.mean() if n else np.nan, halluc_diff=d,
            halluc_diff_ci_low=d_low, halluc_diff_ci_high=d_high, halluc_rel=rel,
            halluc_ci_low=rel_low, halluc_ci_high=rel_high,
            p_holm_hallucination=h_row["p_holm"],
            n_participants=int(pair["participant_id"].nunique()),
            n_items=int(pair["item_id"].nunique()), participants_kept=participants_kept,
            participants_excluded=participants_excluded))
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:-5])
    table["test"] = ("preference: win rate = 1/2; hallucination: clustered McNemar; both "
                     "two-way cluster-robust Wald t")
    table["interval"] = (f"{INTERVAL_NAME}: win rate Wilson on effective n (quality_pref = "
                         "2 p - 1), halluc_diff t, halluc_rel t on the log ratio")
    table["correction"] = "Holm within pairwise_tests / hallucination_pairwise"
    table["alpha"] = alpha
    table["bootstrap_rounds"] = 0
    return table[SUMMARY_COLUMNS]
