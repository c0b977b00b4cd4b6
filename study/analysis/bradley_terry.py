"""Bradley-Terry scores: one number per method from all pairs at once.

Model: ``P(i preferred over j) = sigmoid(theta_i - theta_j)``, fitted by maximum likelihood on
the aggregated outcomes of each pair (count-weighted logistic loss, as in FastChat's
``fit_bt``, minimised with ``scipy.optimize.minimize``). Ties count as half a win for each side. A small L2 ridge keeps the estimate finite
when a method wins every comparison (separation) and fixes the scale's location: the penalised
optimum has ``sum(theta) = 0``, which we also enforce explicitly. Intervals come from the
participant cluster bootstrap (refit per round), not from resampling single votes, because votes
of one participant are correlated; the point estimate is the full-data fit (tabarena #215).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from study.analysis.bootstrap import percentile_interval
from study.analysis.pairwise import method_pairs, pair_counts

BT_COLUMNS = ["method", "score", "ci_low", "ci_high", "rank", "rank_by_ci", "n_votes"]
DEFAULT_RIDGE = 0.01
"""L2 penalty in units of votes: a N(0, 10^2) prior on each score, negligible beside real data."""


def fit_scores(pair_index: np.ndarray, wins: np.ndarray, n_methods: int,
               ridge: float = DEFAULT_RIDGE, start: np.ndarray | None = None) -> np.ndarray:
    """Penalised BT maximum likelihood.

    ``pair_index``: ``(K, 2)`` method indices (i, j); ``wins``: ``(K, 2)`` weighted wins of i
    over j and of j over i (ties already split). Returns sum-to-zero scores on the log-odds scale.
    """
    i, j = pair_index[:, 0], pair_index[:, 1]
    w_i, w_j = wins[:, 0], wins[:, 1]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[i] - theta[j]
        loss = -(w_i * log_expit(d) + w_j * log_expit(-d)).sum() + 0.5 * ridge * theta @ theta
        g_pair = (w_i + w_j) * expit(d) - w_i
        grad = ridge * theta
        np.add.at(grad, i, g_pair)
        np.add.at(grad, j, -g_pair)
        return float(loss), grad

    def hessian(theta: np.ndarray) -> np.ndarray:
        d = theta[i] - theta[j]
        h_pair = (w_i + w_j) * expit(d) * expit(-d)
        hess = np.diag(np.full(n_methods, ridge))
        for rows, cols, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
            np.add.at(hess, (rows, cols), sign * h_pair)
        return hess

    # Newton trust region with the exact Hessian (positive definite thanks to the ridge): a few
    # iterations, and no multithreaded-BLAS overhead on these tiny problems (L-BFGS-B has it).
    x0 = np.zeros(n_methods) if start is None else start
    result = minimize(loss_and_grad, x0, jac=True, hess=hessian, method="trust-exact",
                      options={"gtol": 1e-9})
    return result.x - result.x.mean()


def bradley_terry(votes: pd.DataFrame, methods: list[str], weights: np.ndarray,
                  participants: list[str], ridge: float = DEFAULT_RIDGE) -> pd.DataFrame:
    """Scores, participant-bootstrap 95% intervals and ranks, one row per method.

    ``rank`` orders the point estimates (1 = best); ``rank_by_ci`` is FastChat's conservative rank
    ``1 + #{others whose interval lies entirely above this one's}``, so overlapping methods share
    a rank.
    """
    methods = sorted(methods)
    pairs = method_pairs(methods)
    if not methods:
        return pd.DataFrame(columns=BT_COLUMNS)
    index = {m: k for k, m in enumerate(methods)}
    pair_index = np.array([[index[a], index[b]] for a, b in pairs], dtype=int).reshape(-1, 2)
    counts = pair_counts(votes, pairs, participants)
    half_ties = 0.5 * counts[:, :, 2]
    per_participant = np.stack([counts[:, :, 0] + half_ties, counts[:, :, 1] + half_ties], axis=2)
    theta = fit_scores(pair_index, per_participant.sum(axis=0), len(methods), ridge)
    boot = np.array([fit_scores(pair_index, np.einsum("p,pkc->kc", w, per_participant),
                                len(methods), ridge, start=theta) for w in weights])
    low, high = percentile_interval(boot.reshape(len(weights), len(methods)))
    n_votes = np.zeros(len(methods), dtype=int)
    per_pair = counts.sum(axis=(0, 2))
    for (a, b), n in zip(pairs, per_pair):
        n_votes[index[a]] += int(n)
        n_votes[index[b]] += int(n)
    table = pd.DataFrame({"method": methods, "score": theta, "ci_low": low, "ci_high": high,
                          "n_votes": n_votes})
    table["rank"] = table["score"].rank(ascending=False, method="min").astype(int)
    table["rank_by_ci"] = [1 + int((table["ci_low"] > h).sum()) for h in table["ci_high"]]
    return table.sort_values(["rank", "method"])[BT_COLUMNS].reset_index(drop=True)
