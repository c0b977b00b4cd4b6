"""Hallucination flags: per-method rates and paired method-vs-method comparisons.

Each side of a vote carries its own 0/1 flag ("hallucinated / over-edited content"), so the flags
are a per-output judgement independent of which side won. Flags of one rater are correlated (some
raters flag far more than others) and so are flags on one item, so every decision and interval
is two-way cluster-robust (participant x item, :mod:`study.analysis.clustered`):

* Rate per method: flagged appearances / appearances, with the Wilson interval on the effective
  sample size (appearances / design effect) and the t quantile of the clustered variance
  (``ci_low/ci_high``); the independent-votes Wilson interval stays as ``naive_ci_*``.
* Method X vs Y: every vote that compared X and Y is a matched pair (same item, rater, moment).
  The paired difference ``flag_X - flag_Y`` has mean ``rate_X - rate_Y`` (``rate_diff``); its
  two-way cluster-robust Wald t test is the clustered McNemar test (the McNemar statistic is the
  same test with a binomial variance that assumes independent pairs; Durkalski et al. 2003 give
  the one-way clustered version). ``p_value`` and ``significant`` come from it, Holm-corrected
  across pairs, and ``diff_ci_*`` is its t interval. The exact McNemar test (statsmodels) stays as
  ``naive_p_value`` with its own Holm column.

Cochran's Q on majority-binarised items is gone: it discarded most of the data (only items on
which every method was judged) and almost never rejected.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar

from study.analysis.clustered import INTERVAL_NAME, TEST_NAME, clustered_mean, codes
from study.analysis.pairwise import holm, method_pairs, wilson_interval

RATE_COLUMNS = ["method", "n_appearances", "n_flagged", "rate", "ci_low", "ci_high",
                "naive_ci_low", "naive_ci_high", "design_effect", "n_participants", "n_items",
                "test", "interval", "correction", "alpha", "bootstrap_rounds", "note"]
MCNEMAR_COLUMNS = ["method_a", "method_b", "n_pairs", "both_flagged", "only_a", "only_b",
                   "neither", "rate_a", "rate_b", "rate_diff", "diff_ci_low", "diff_ci_high",
                   "p_value", "p_holm", "significant", "naive_p_value", "naive_p_holm",
                   "n_participants", "n_items", "test", "interval", "correction", "alpha",
                   "bootstrap_rounds", "note"]
RATE_INTERVAL = f"Wilson on effective n (appearances / design effect), {INTERVAL_NAME} t quantile"


def appearances(votes: pd.DataFrame) -> pd.DataFrame:
    """Long table ``participant_id, item_id, method, flag``: each vote gives both its sides."""
    keep = ["participant_id", "item_id"]
    return pd.concat([
        votes[keep + ["method_a", "halluc_a"]].set_axis(keep + ["method", "flag"], axis=1),
        votes[keep + ["method_b", "halluc_b"]].set_axis(keep + ["method", "flag"], axis=1),
    ], ignore_index=True)


def hallucination_rates(votes: pd.DataFrame, methods: list[str],
                        alpha: float = 0.05) -> pd.DataFrame:
    """Share of each method's appearances flagged, with clustered and naive 95% intervals."""
    long = appearances(votes)
    rows = []
    for method in sorted(methods):
        own = long[long["method"] == method]
        n, k = len(own), int(own["flag"].sum())
        est = clustered_mean(own["flag"].to_numpy(float), codes(own["participant_id"].to_numpy()),
                             codes(own["item_id"].to_numpy()))
        low, high = est.wilson_interval() if n else (np.nan, np.nan)
        naive_low, naive_high = wilson_interval(np.array([k]), np.array([n]))
        rows.append(dict(method=method, n_appearances=n, n_flagged=k,
                         rate=k / n if n else np.nan, ci_low=low, ci_high=high,
                         naive_ci_low=naive_low[0], naive_ci_high=naive_high[0],
                         design_effect=est.design_effect,
                         n_participants=int(own["participant_id"].nunique()),
                         n_items=int(own["item_id"].nunique()),
                         note=("no appearance" if n == 0 else est.note)))
    table = pd.DataFrame(rows, columns=[c for c in RATE_COLUMNS if c not in (
        "test", "interval", "correction", "alpha", "bootstrap_rounds")])
    table["test"] = "none (estimate)"
    table["interval"] = RATE_INTERVAL
    table["correction"] = "none"
    table["alpha"] = alpha
    table["bootstrap_rounds"] = 0
    return table[RATE_COLUMNS]


def mcnemar_tests(votes: pd.DataFrame, methods: list[str], alpha: float = 0.05,
                  warn: bool = True) -> pd.DataFrame:
    """Clustered paired comparison per method pair on the votes that compared them."""
    rows, undefined = [], []
    for a, b in method_pairs(methods):
        pair = votes[(votes["method_a"] == a) & (votes["method_b"] == b)]
        fa, fb = pair["halluc_a"].to_numpy(int), pair["halluc_b"].to_numpy(int)
        table = np.array([[np.sum((fa == 1) & (fb == 1)), np.sum((fa == 1) & (fb == 0))],
                          [np.sum((fa == 0) & (fb == 1)), np.sum((fa == 0) & (fb == 0))]])
        n = len(pair)
        est = clustered_mean((fa - fb).astype(float), codes(pair["participant_id"].to_numpy()),
                             codes(pair["item_id"].to_numpy()), null_for_degenerate=0.0)
        p = est.t_test(0.0) if n else np.nan
        low, high = est.t_interval() if n else (np.nan, np.nan)
        note = "no vote compares them" if n == 0 else est.note
        if n and not np.isfinite(p):
            undefined.append(f"{a} vs {b} ({note})")
        rows.append(dict(
            method_a=a, method_b=b, n_pairs=n, both_flagged=table[0, 0], only_a=table[0, 1],
            only_b=table[1, 0], neither=table[1, 1], rate_a=fa.mean() if n else np.nan,
            rate_b=fb.mean() if n else np.nan, rate_diff=est.mean, diff_ci_low=low,
            diff_ci_high=high, p_value=p,
            naive_p_value=float(mcnemar(table, exact=True).pvalue) if n else np.nan,
            n_participants=int(pair["participant_id"].nunique()),
            n_items=int(pair["item_id"].nunique()),
            note="; ".join(x for x in (note, "naive_*: exact McNemar test assuming independent "
                                       "pairs") if x)))
    if undefined and warn:
        warnings.warn("clustered hallucination test undefined (NaN) for "
                      + ", ".join(undefined), stacklevel=2)
    out = pd.DataFrame(rows, columns=[c for c in MCNEMAR_COLUMNS if c not in (
        "p_holm", "significant", "naive_p_holm", "test", "interval", "correction", "alpha",
        "bootstrap_rounds")])
    out["p_holm"] = holm(out["p_value"].to_numpy(float), alpha)
    out["significant"] = np.nan_to_num(out["p_holm"].to_numpy(float), nan=1.0) < alpha
    out["naive_p_holm"] = holm(out["naive_p_value"].to_numpy(float), alpha)
    out["test"] = "clustered McNemar: rate_a - rate_b = 0, " + TEST_NAME
    out["interval"] = "rate_diff +- t * se, " + INTERVAL_NAME
    out["correction"] = "Holm over pairs with a defined p-value"
    out["alpha"] = alpha
    out["bootstrap_rounds"] = 0
    return out[MCNEMAR_COLUMNS]
