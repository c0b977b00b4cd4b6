"""Per-pair preference: is method_a preferred over method_b, accounting for raters and images.

Decision test (``p_value``, ``p_holm``, ``significant``): among the decisive votes of a pair, the
share won by ``method_a`` is a mean of 0/1 values; its standard error is two-way cluster-robust
(participant x item, :mod:`study.analysis.clustered`) and ``H0: win rate = 1/2`` is tested with a
Wald t statistic on ``min(participants, items) - 1`` degrees of freedom. Holm's step-down procedure
over the pairs with a defined p-value controls the family-wise error. The 95% interval is the
Wilson interval on the effective sample size (decisive votes / design effect) with the same t
quantile. Ties carry no sign and are set aside (their count and share are reported).

The exact sign test and Wilson interval that treat votes as independent stay as labelled
``naive_*`` columns: they are what most papers report, and comparing them with the clustered
columns shows how much clustering matters. They are not used for any decision.
"""
from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import binom
from statsmodels.stats.proportion import proportion_confint

from study.analysis.clustered import INTERVAL_NAME, TEST_NAME, clustered_mean, codes

PAIRWISE_COLUMNS = ["method_a", "method_b", "n_votes", "wins_a", "wins_b", "ties", "tie_rate",
                    "win_rate_a", "ci_low", "ci_high", "p_value", "p_holm", "significant",
                    "n_participants", "n_items", "design_effect",
                    "naive_p_value", "naive_p_holm", "naive_ci_low", "naive_ci_high",
                    "test", "interval", "correction", "alpha", "bootstrap_rounds", "note"]
WIN_RATE_INTERVAL = f"Wilson on effective n (votes / design effect), {INTERVAL_NAME} t quantile"
NAIVE_NOTE = "naive_*: exact sign test and Wilson interval assuming independent votes"


def method_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """All unordered pairs, each as ``(method_a, method_b)`` with ``method_a < method_b``."""
    return list(combinations(sorted(methods), 2))


def pair_counts(votes: pd.DataFrame, pairs: list[tuple[str, str]],
                participants: list[str]) -> np.ndarray:
    """``(n_participants, n_pairs, 3)`` counts of (wins_a, wins_b, ties) per participant and pair."""
    counts = np.zeros((len(participants), len(pairs), 3))
    if votes.empty or not pairs:
        return counts
    p_index = {p: i for i, p in enumerate(participants)}
    k_index = {pair: k for k, pair in enumerate(pairs)}
    label_index = {"a": 0, "b": 1, "tie": 2}
    grouped = votes.groupby(["participant_id", "method_a", "method_b", "label"]).size()
    for (pid, a, b, label), n in grouped.items():
        if (a, b) in k_index and pid in p_index:
            counts[p_index[pid], k_index[(a, b)], label_index[label]] += n
    return counts


def wilson_interval(successes: np.ndarray, trials: np.ndarray,
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (independent trials); NaN where there are no trials."""
    successes, trials = np.asarray(successes, float), np.asarray(trials, float)
    safe = np.where(trials > 0, trials, 1)
    low, high = proportion_confint(successes, safe, alpha=1 - level, method="wilson")
    return np.where(trials > 0, low, np.nan), np.where(trials > 0, high, np.nan)


def holm(p_values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values over the defined (non-NaN) tests; NaN stays NaN.

    Step-down: sort ascending, multiply the r-th smallest by (m - r), take the running maximum,
    cap at 1 (the same numbers as statsmodels' ``multipletests(method="holm")``, checked in the
    tests; computed here because that function calls ``gc.collect()`` on every call).
    """
    p_values = np.asarray(p_values, float)
    adjusted = np.full_like(p_values, np.nan)
    defined = np.flatnonzero(~np.isnan(p_values))
    if defined.size:
        order = defined[np.argsort(p_values[defined], kind="stable")]
        m = len(order)
        steps = np.minimum(1.0, (m - np.arange(m)) * p_values[order])
        adjusted[order] = np.maximum.accumulate(steps)
    return adjusted


def sign_test_p(wins_a, decisive):
    """Two-sided exact binomial (sign) test of wins_a/decisive against 1/2; NaN with no decisive
    vote. At p = 1/2 the distribution is symmetric, so the p-value is
    ``min(1, 2 * P(K <= min(k, n - k)))``: the same number as ``scipy.stats.binomtest`` (tested),
    vectorised."""
    k, n = np.asarray(wins_a, float), np.asarray(decisive, float)
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2 * binom.cdf(np.minimum(k, n - k), np.where(n > 0, n, 1), 0.5))
    p = np.where(n > 0, p, np.nan)
    return float(p) if p.ndim == 0 else p


def pair_statistics(k_vote: np.ndarray, label: np.ndarray, participant: np.ndarray,
                    item: np.ndarray, n_pairs: int) -> dict[str, np.ndarray]:
    """Per-pair counts, clustered win rate, interval and p-value, and the naive columns.

    Arrays per vote: ``k_vote`` pair index, ``label`` 0 (method_a won), 1 (method_b won) or 2
    (tie), ``participant`` and ``item`` codes. The array core of :func:`pairwise_tests`, also
    called directly by the calibration benchmark.
    """
    out = {name: np.full(n_pairs, np.nan) for name in (
        "wins_a", "wins_b", "ties", "n_participants", "n_items", "win_rate_a", "ci_low",
        "ci_high", "p_value", "design_effect", "naive_p_value", "naive_ci_low",
        "naive_ci_high")}
    out["note"] = np.array([""] * n_pairs, dtype=object)
    for k in range(n_pairs):
        in_pair = k_vote == k
        lab = label[in_pair]
        wins_a, wins_b = int((lab == 0).sum()), int((lab == 1).sum())
        decisive = wins_a + wins_b
        out["wins_a"][k], out["wins_b"][k], out["ties"][k] = wins_a, wins_b, int((lab == 2).sum())
        out["n_participants"][k] = len(set(participant[in_pair].tolist()))
        out["n_items"][k] = len(set(item[in_pair].tolist()))
        if decisive == 0:
            out["note"][k] = "no decisive vote"
            continue
        keep = in_pair & (label != 2)
        est = clustered_mean((label[keep] == 0).astype(float), participant[keep], item[keep],
                             null_for_degenerate=0.5)
        out["win_rate_a"][k] = wins_a / decisive
        out["ci_low"][k], out["ci_high"][k] = est.wilson_interval()
        out["p_value"][k] = est.t_test(0.5)
        out["design_effect"][k] = est.design_effect
        out["note"][k] = est.note
    decisive = out["wins_a"] + out["wins_b"]
    out["naive_p_value"] = sign_test_p(out["wins_a"], decisive)
    out["naive_ci_low"], out["naive_ci_high"] = wilson_interval(out["wins_a"], decisive)
    return out


def pairwise_tests(votes: pd.DataFrame, methods: list[str], alpha: float = 0.05,
                   warn: bool = True) -> pd.DataFrame:
    """One row per method pair, in the column order of :data:`PAIRWISE_COLUMNS`.

    ``votes`` are main-trial votes after exclusions. A pair with no decisive vote, or whose
    decisive votes come from fewer than two participants or items, has NaN p-values and
    intervals (with a ``note`` and a warning), is left out of the Holm family and is not
    significant.
    """
    pairs = method_pairs(methods)
    pair_of = {p: k for k, p in enumerate(pairs)}
    k_vote = np.array([pair_of.get((a, b), -1) for a, b in zip(votes["method_a"],
                                                                votes["method_b"])], dtype=int)
    label = votes["label"].map({"a": 0, "b": 1, "tie": 2}).to_numpy(int) if len(votes) else (
        np.zeros(0, int))
    stats = pair_statistics(k_vote, label, codes(votes["participant_id"].to_numpy()),
                            codes(votes["item_id"].to_numpy()), len(pairs))
    table = pd.DataFrame({"method_a": [a for a, _ in pairs], "method_b": [b for _, b in pairs],
                          **stats})
    decisive = table["wins_a"] + table["wins_b"]
    table["n_votes"] = decisive + table["ties"]
    with np.errstate(invalid="ignore", divide="ignore"):
        table["tie_rate"] = table["ties"] / table["n_votes"]
    undefined = (decisive > 0) & table["p_value"].isna()
    if undefined.any() and warn:
        warnings.warn("clustered test undefined (NaN) for " + ", ".join(
            f"{r.method_a} vs {r.method_b} ({r.note})" for r in table[undefined].itertuples()),
            stacklevel=2)
    table["note"] = [("; ".join(x for x in (n, NAIVE_NOTE) if x)) for n in table["note"]]
    return finish_pairwise(table, alpha)


def finish_pairwise(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm, ``significant`` and the method columns (shared with the benchmark)."""
    table["p_holm"] = holm(table["p_value"].to_numpy(float), alpha)
    table["significant"] = np.nan_to_num(table["p_holm"].to_numpy(float), nan=1.0) < alpha
    table["naive_p_holm"] = holm(table["naive_p_value"].to_numpy(float), alpha)
    table["test"] = "win rate = 1/2, " + TEST_NAME + " on decisive votes"
    table["interval"] = WIN_RATE_INTERVAL
    table["correction"] = "Holm over pairs with a defined p-value"
    table["alpha"] = alpha
    table["bootstrap_rounds"] = 0
    for column in ("n_votes", "wins_a", "wins_b", "ties", "n_participants", "n_items"):
        table[column] = table[column].astype(int)
    return table[PAIRWISE_COLUMNS]
