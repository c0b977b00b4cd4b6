"""Sample size for the per-pair sign test, by exact binomial calculation.

For n decisive votes the two-sided exact test (p = 1/2, symmetric) rejects when
``min(k, n - k) <= c_n``, where ``c_n`` is the largest c with ``2 * Binom.cdf(c; n, 1/2) <= alpha``.
Power at true preference q is ``P(K <= c_n) + P(K >= n - c_n)`` under Binom(n, q). Exact power
is saw-toothed in n; we report the smallest n that reaches the target (the usual convention).

From decisive votes to participants:
* Holm across K = M(M-1)/2 pairs: the smallest p-value is tested at alpha / K, so we size each
  pair at alpha / K (conservative for the later steps).
* ties: votes per pair = decisive / (1 - tie rate).
* clustering: design effect ``1 + (m - 1) * icc`` with m = a participant's votes on one pair =
  votes per participant / K (main trials spread evenly over pairs).
* participants = ceil(K * votes per pair / votes per participant); attention and repeat trials
  come on top of ``votes_per_participant``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import binom


def exact_sign_test_power(n: np.ndarray | int, q: float, alpha: float) -> np.ndarray:
    """Power of the two-sided exact sign test with ``n`` decisive votes at true preference ``q``."""
    n = np.atleast_1d(np.asarray(n, dtype=int))
    power = np.zeros(len(n))
    for idx, size in enumerate(n):
        c = np.arange(size // 2 + 1)
        reject = c[2 * binom.cdf(c, size, 0.5) <= alpha]
        if reject.size:
            crit = reject[-1]
            power[idx] = binom.cdf(crit, size, q) + binom.sf(size - crit - 1, size, q)
    return power


def decisive_votes_needed(q: float, alpha: float = 0.05, power: float = 0.8,
                          max_n: int = 100_000) -> int:
    """Smallest n whose exact sign-test power at preference ``q`` reaches ``power``."""
    if not 0 < q < 1 or q == 0.5:
        raise ValueError(f"effect must be a preference in (0, 1) other than 0.5, got {q}")
    step = 256
    for start in range(1, max_n + 1, step):
        sizes = np.arange(start, min(start + step, max_n + 1))
        reached = np.nonzero(exact_sign_test_power(sizes, q, alpha) >= power)[0]
        if reached.size:
            return int(sizes[reached[0]])
    raise ValueError(f"power {power} not reached within {max_n} decisive votes")


@dataclass(frozen=True)
class PowerPlan:
    effect: float
    n_pairs: int
    alpha_per_pair: float
    decisive_per_pair: int
    achieved_power: float
    tie_rate: float
    design_effect: float
    votes_per_pair: int
    total_votes: int
    participants: int


def plan_study(effect: float, methods: int = 2, ties: float = 0.0,
               votes_per_participant: int = 40, icc: float = 0.0, alpha: float = 0.05,
               power: float = 0.8) -> PowerPlan:
    """Votes and participants for every pair's sign test to reach ``power`` at ``effect``."""
    if methods < 2:
        raise ValueError("need at least two methods")
    if not 0 <= ties < 1:
        raise ValueError(f"tie rate must be in [0, 1), got {ties}")
    n_pairs = methods * (methods - 1) // 2
    alpha_pair = alpha / n_pairs
    decisive = decisive_votes_needed(effect, alpha_pair, power)
    per_pair_per_participant = votes_per_participant / n_pairs
    deff = 1 + max(per_pair_per_participant - 1, 0) * icc
    votes_per_pair = math.ceil(decisive * deff / (1 - ties))
    total = n_pairs * votes_per_pair
    return PowerPlan(effect, n_pairs, alpha_pair, decisive,
                     float(exact_sign_test_power(decisive, effect, alpha_pair)[0]), ties, deff,
                     votes_per_pair, total, math.ceil(total / votes_per_participant))


def power_table(effects: list[float], **kwargs) -> pd.DataFrame:
    """One :class:`PowerPlan` row per effect size."""
    return pd.DataFrame([asdict(plan_study(e, **kwargs)) for e in effects])


POWER_COLUMNS = ["method_a", "method_b", "decisive_votes", "design_effect", "effective_n",
                 "alpha_per_pair", "target_power", "detectable_win_rate", "power_at_0.60",
                 "power_at_0.65", "power_at_0.70", "test", "interval", "correction", "alpha",
                 "bootstrap_rounds", "note"]


def detectable_win_rate(n_eff: float, alpha: float, power: float = 0.8) -> float:
    """Smallest true win rate q > 1/2 at which the exact sign test on ``n_eff`` effective decisive
    votes reaches ``power`` (bisection; power rises with q). NaN when even q = 0.999 does not."""
    n = int(np.floor(n_eff))
    if n < 1 or exact_sign_test_power(n, 0.999, alpha)[0] < power:
        return float("nan")
    low, high = 0.5, 0.999
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if exact_sign_test_power(n, mid, alpha)[0] < power else (low, mid)
    return float(high)


def achieved_power_table(pairwise: pd.DataFrame, alpha: float = 0.05,
                         power: float = 0.8) -> pd.DataFrame:
    """Sensitivity of *this* study, per pair: the smallest true win rate it detects with
    ``power`` (not "observed power", which only restates the p-value).

    Effective n = decisive votes / design effect (the clustered over the independent-votes
    variance of the win rate, floored at 1); each pair is sized at alpha / K, Holm's first step
    over the K pairs with decisive votes (conservative for the later steps)."""
    rows = []
    k = int(((pairwise["wins_a"] + pairwise["wins_b"]) > 0).sum()) if len(pairwise) else 0
    alpha_pair = alpha / max(k, 1)
    for _, r in pairwise.iterrows():
        decisive = int(r["wins_a"] + r["wins_b"])
        deff = float(r["design_effect"]) if np.isfinite(r["design_effect"]) else np.nan
        n_eff = decisive / deff if decisive and np.isfinite(deff) else np.nan
        n_int = int(np.floor(n_eff)) if np.isfinite(n_eff) else 0
        at = {q: float(exact_sign_test_power(n_int, q, alpha_pair)[0]) if n_int else np.nan
              for q in (0.6, 0.65, 0.7)}
        rows.append([r["method_a"], r["method_b"], decisive, deff, n_eff, alpha_pair, power,
                     detectable_win_rate(n_eff, alpha_pair, power) if n_int else np.nan,
                     at[0.6], at[0.65], at[0.7],
                     "exact sign test on the effective number of decisive votes", "none",
                     "Holm first step (alpha / pairs)", alpha, 0,
                     "" if n_int else "no decisive vote or undefined design effect"])
    return pd.DataFrame(rows, columns=POWER_COLUMNS)
