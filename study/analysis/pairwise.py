"""Per-pair preference: sign test, Wilson interval, Holm correction, cluster-bootstrap sensitivity.

A two-alternative vote is the sign of a paired quality difference, so "is A preferred over B" is
the exact binomial (sign) test of ``wins_a`` out of the decisive votes against 1/2; ties carry no
sign and are dropped (their count is reported). The test assumes independent votes; the
participant cluster bootstrap interval shows how much that assumption matters. Holm's step-down
procedure controls the family-wise error over all pairs.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from study.analysis.bootstrap import percentile_interval

PAIRWISE_COLUMNS = ["method_a", "method_b", "n_votes", "wins_a", "wins_b", "ties", "tie_rate",
                    "win_rate_a", "ci_low", "ci_high", "p_value", "p_holm", "significant",
                    "boot_ci_low", "boot_ci_high"]


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
    """Wilson score interval; NaN where there are no trials (no information, not 0-1)."""
    successes, trials = np.asarray(successes, float), np.asarray(trials, float)
    safe = np.where(trials > 0, trials, 1)
    low, high = proportion_confint(successes, safe, alpha=1 - level, method="wilson")
    return np.where(trials > 0, low, np.nan), np.where(trials > 0, high, np.nan)


def holm(p_values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values over the defined (non-NaN) tests; NaN stays NaN."""
    p_values = np.asarray(p_values, float)
    adjusted = np.full_like(p_values, np.nan)
    defined = ~np.isnan(p_values)
    if defined.any():
        adjusted[defined] = multipletests(p_values[defined], alpha=alpha, method="holm")[1]
    return adjusted


def sign_test_p(wins_a: int, decisive: int) -> float:
    """Two-sided exact binomial test of wins_a/decisive against 1/2; NaN with no decisive vote."""
    if decisive == 0:
        return float("nan")
    return float(binomtest(int(wins_a), int(decisive), p=0.5, alternative="two-sided").pvalue)


def pairwise_tests(votes: pd.DataFrame, methods: list[str], weights: np.ndarray,
                   participants: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """One row per method pair, in the column order of :data:`PAIRWISE_COLUMNS`.

    ``votes`` are main-trial votes after exclusions; ``weights`` come from
    :func:`study.analysis.bootstrap.participant_weights` over ``participants``. A pair with no
    decisive vote has NaN win rate, intervals and p-values and is left out of the Holm family;
    ``significant`` is ``p_holm < alpha`` (False where undefined).
    """
    pairs = method_pairs(methods)
    counts = pair_counts(votes, pairs, participants)
    total = counts.sum(axis=0)
    wins_a, wins_b, ties = total[:, 0], total[:, 1], total[:, 2]
    decisive = wins_a + wins_b
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = wins_a / decisive
        boot = np.einsum("bp,pk->bk", weights, counts[:, :, 0]) / np.einsum(
            "bp,pk->bk", weights, counts[:, :, 0] + counts[:, :, 1])
        tie_rate = ties / (decisive + ties)
    ci_low, ci_high = wilson_interval(wins_a, decisive)
    boot_low, boot_high = percentile_interval(boot)
    p_values = np.array([sign_test_p(w, n) for w, n in zip(wins_a, decisive)])
    p_holm = holm(p_values, alpha)
    return pd.DataFrame({
        "method_a": [a for a, _ in pairs], "method_b": [b for _, b in pairs],
        "n_votes": (decisive + ties).astype(int), "wins_a": wins_a.astype(int),
        "wins_b": wins_b.astype(int), "ties": ties.astype(int), "tie_rate": tie_rate,
        "win_rate_a": win_rate, "ci_low": ci_low, "ci_high": ci_high, "p_value": p_values,
        "p_holm": p_holm, "significant": np.nan_to_num(p_holm, nan=1.0) < alpha,
        "boot_ci_low": boot_low, "boot_ci_high": boot_high,
    }, columns=PAIRWISE_COLUMNS)
