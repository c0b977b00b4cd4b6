"""Bradley-Terry scores: one number per method from all pairs at once.

Model: ``P(i preferred over j | the vote is decisive) = sigmoid(theta_i - theta_j)``. **Ties are
set aside** (stated rule): a tie says neither output was preferred, which under this conditional
model carries no information about the order, so it neither counts as half a win (which shrinks
the scores towards 0 and breaks the formula above) nor needs a tie model; tie rates are reported
per pair in ``pairwise_tests.csv``. The scores are the maximum likelihood estimate on decisive
votes under ``sum(theta) = 0`` (parametrised by an orthonormal basis of that subspace, so the
Hessian is positive definite and no ridge is needed), found by Newton trust-region steps
(``scipy.optimize.minimize(method="trust-exact")``) on the count-aggregated likelihood; the solver
status and the gradient are checked, and a failed fit is NaN with a warning, never silent.

The MLE exists only when every method can be reached from every other through "beat" edges
(Zermelo 1929; Ford 1957): the win graph must be strongly connected. Otherwise some scores are
infinite (separation: a method that won, or lost, every decisive vote against the rest), and any
finite number would be the artefact of a penalty; so:

* methods without a decisive vote get NaN (warning);
* a comparison graph that falls into disconnected parts gives NaN for all (warning: scores from
  different parts are not on one scale);
* a win graph that is connected but not strongly connected (separation) gives NaN for all
  (warning naming the methods concerned).

Uncertainty: the covariance of the scores is the two-way cluster-robust sandwich (participant x
item, :mod:`study.analysis.clustered`) of the logistic estimating equations, which is what a GEE
with an independence working correlation reports; intervals are ``score +- t * se`` with the
Satterthwaite degrees of freedom of :func:`study.analysis.clustered.satterthwaite_df` (at most
``min(participants, items) - 1``). Rank intervals come from draws of the scores
from the normal approximation ``N(theta_hat, V)``: the 2.5% and 97.5% points of each method's rank
over the draws.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import null_space
from scipy.optimize import minimize
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit

from study.analysis.clustered import (INTERVAL_NAME, TEST_NAME, codes, satterthwaite_df,
                                      t_quantile, twoway_cov)
from study.analysis.pairwise import method_pairs

BT_COLUMNS = ["method", "score", "se", "ci_low", "ci_high", "elo", "elo_ci_low", "elo_ci_high",
              "rank", "rank_ci_low", "rank_ci_high", "rank_by_ci", "n_votes", "n_decisive",
              "n_participants", "n_items", "test", "interval", "correction", "alpha",
              "bootstrap_rounds", "note"]
ELO_SCALE = 400 / math.log(10)
ELO_BASE = 1000.0
"""Elo-like scale: ``1000 + 400 * score / ln 10`` (a 400-point gap = 10:1 odds)."""
INTERVAL = f"score +- t * se, {INTERVAL_NAME} sandwich; ranks from normal draws"


@dataclass
class BTFit:
    theta: np.ndarray
    basis: np.ndarray
    hessian: np.ndarray
    converged: bool
    message: str


def sum_zero_basis(n_methods: int) -> np.ndarray:
    """``(n, n-1)`` orthonormal basis of ``{theta : sum(theta) = 0}``."""
    return null_space(np.ones((1, n_methods)))


def fit_scores(pair_index: np.ndarray, wins: np.ndarray, n_methods: int,
               start: np.ndarray | None = None) -> BTFit:
    """Bradley-Terry maximum likelihood under ``sum(theta) = 0``, no penalty.

    ``pair_index``: ``(K, 2)`` method indices (i, j); ``wins``: ``(K, 2)`` decisive wins of i over
    j and of j over i. The caller checks that the MLE exists (strongly connected win graph).
    """
    basis = sum_zero_basis(n_methods)
    x = basis[pair_index[:, 0]] - basis[pair_index[:, 1]]  # (K, n-1) design on the basis
    w_i, w_j = wins[:, 0].astype(float), wins[:, 1].astype(float)
    n = w_i + w_j

    def loss_and_grad(beta: np.ndarray) -> tuple[float, np.ndarray]:
        d = x @ beta
        loss = -(w_i * log_expit(d) + w_j * log_expit(-d)).sum()
        return float(loss), x.T @ (n * expit(d) - w_i)

    def hessian(beta: np.ndarray) -> np.ndarray:
        p = expit(x @ beta)
        return (x * (n * p * (1 - p))[:, None]).T @ x

    beta0 = np.zeros(n_methods - 1) if start is None else basis.T @ start
    result = minimize(loss_and_grad, beta0, jac=True, hess=hessian, method="trust-exact",
                      options={"gtol": 1e-10})
    grad_ok = np.abs(result.jac).max() <= 1e-6 * max(n.sum(), 1.0)
    converged = bool(result.success or grad_ok) and np.isfinite(result.x).all()
    return BTFit(basis @ result.x, basis, hessian(result.x), converged, str(result.message))


def graph_problem(methods: list[str], pair_index: np.ndarray, wins: np.ndarray) -> str:
    """Why the BT MLE does not exist for these decisive counts, or ``""`` when it does."""
    m = len(methods)
    both = wins.sum(axis=1) > 0
    undirected = csr_matrix((np.ones(both.sum()), (pair_index[both, 0], pair_index[both, 1])),
                            shape=(m, m))
    n_parts, part = connected_components(undirected, directed=False)
    if n_parts > 1:
        groups = [sorted(methods[k] for k in range(m) if part[k] == g) for g in range(n_parts)]
        return ("the comparison graph is disconnected into " + " | ".join(map(str, groups))
                + ": scores in different parts are not on one scale")
    rows = np.concatenate([pair_index[wins[:, 0] > 0, 0], pair_index[wins[:, 1] > 0, 1]])
    cols = np.concatenate([pair_index[wins[:, 0] > 0, 1], pair_index[wins[:, 1] > 0, 0]])
    beats = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(m, m))
    n_strong, strong = connected_components(beats, directed=True, connection="strong")
    if n_strong > 1:
        # a component that no outside method ever beat holds the separated winners
        unbeaten = [g for g in range(n_strong)
                    if not any(strong[r] != g and strong[c] == g for r, c in zip(rows, cols))]
        top = sorted(methods[k] for k in range(m) if strong[k] in unbeaten)
        return (f"separation: {top} never lost a decisive vote to the other methods, so the "
                "maximum likelihood scores are infinite")
    return ""


@dataclass
class BTResult:
    """Array core of :func:`bradley_terry` (per method, in the given method order)."""

    theta: np.ndarray
    se: np.ndarray
    df: np.ndarray
    rank_low: np.ndarray
    rank_high: np.ndarray
    notes: list
    problem: str
    cov_note: str


def bt_core(pair_index: np.ndarray, k_vote: np.ndarray, y: np.ndarray, participant: np.ndarray,
            item: np.ndarray, methods: list[str], n_draws: int = 1000,
            seed: int = 0) -> BTResult:
    """Fit and two-way cluster-robust covariance from per-vote arrays of *decisive* votes:
    ``k_vote`` pair index into ``pair_index`` (K, 2), ``y`` 1 when the pair's first method won,
    ``participant``/``item`` labels or codes."""
    m = len(methods)
    wins = np.zeros((len(pair_index), 2))
    np.add.at(wins[:, 0], k_vote, y)
    np.add.at(wins[:, 1], k_vote, 1 - y)
    n_decisive = np.zeros(m)
    np.add.at(n_decisive, pair_index[:, 0], wins.sum(axis=1))
    np.add.at(n_decisive, pair_index[:, 1], wins.sum(axis=1))
    theta, se, df = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    rank_low, rank_high = np.full(m, np.nan), np.full(m, np.nan)
    notes = ["no decisive vote: score undefined" if n == 0 else "" for n in n_decisive]
    active = [k for k in range(m) if n_decisive[k] > 0]
    problem, cov_note = "", ""
    if len(active) < 2:
        problem = "fewer than two methods with decisive votes"
        return BTResult(theta, se, df, rank_low, rank_high, [problem] * m, problem, "")
    sub = {k: s_ for s_, k in enumerate(active)}
    keep = np.array([i in sub and j in sub for i, j in pair_index], dtype=bool)
    sub_pairs = np.array([[sub[i], sub[j]] for i, j in pair_index[keep]]).reshape(-1, 2)
    problem = graph_problem([methods[k] for k in active], sub_pairs, wins[keep])
    if not problem:
        fit = fit_scores(sub_pairs, wins[keep], len(active))
        if not fit.converged:
            problem = f"the Bradley-Terry fit did not converge ({fit.message})"
    if problem:
        return BTResult(theta, se, df, rank_low, rank_high, [problem] * m, problem, "")
    theta[active] = fit.theta
    sub_k = np.cumsum(keep) - 1
    x = fit.basis[sub_pairs[:, 0]] - fit.basis[sub_pairs[:, 1]]
    p_pair = expit(x @ (fit.basis.T @ fit.theta))
    kv = sub_k[k_vote]
    scores = x[kv] * (y - p_pair[kv])[:, None]
    bread = np.linalg.inv(fit.hessian)
    g_p, g_i = codes(participant), codes(item)
    robust = twoway_cov(scores, bread, g_p, g_i)
    cov_note = robust.note
    if np.isfinite(robust.cov).all():
        cov_theta = fit.basis @ robust.cov @ fit.basis.T
        se[active] = np.sqrt(np.clip(np.diag(cov_theta), 0, None))
        # per-method Satterthwaite df: theta_m = basis[m] @ beta is linear in the scores
        w = x[kv] @ bread @ fit.basis.T
        q2 = w ** 2 * (p_pair * (1 - p_pair))[kv, None]
        df[active] = [satterthwaite_df(q2[:, s_], g_p, g_i) for s_ in range(len(active))]
        if n_draws > 0:
            rng = np.random.default_rng(seed)
            vals, vecs = np.linalg.eigh(robust.cov)
            draws = (rng.standard_normal((n_draws, len(vals))) * np.sqrt(np.clip(vals, 0, None))
                     ) @ vecs.T @ fit.basis.T + fit.theta
            ranks = (-draws).argsort(axis=1).argsort(axis=1) + 1
            rank_low[active] = np.percentile(ranks, 2.5, axis=0, method="lower")
            rank_high[active] = np.percentile(ranks, 97.5, axis=0, method="higher")
    else:
        cov_note = cov_note or "covariance undefined"
    if cov_note:
        notes = [n or cov_note for n in notes]
    return BTResult(theta, se, df, rank_low, rank_high, notes, "", cov_note)


def bradley_terry(votes: pd.DataFrame, methods: list[str], alpha: float = 0.05,
                  n_draws: int = 1000, seed: int = 0, warn: bool = True) -> pd.DataFrame:
    """Scores, two-way cluster-robust 95% intervals, Elo scale and rank intervals per method."""
    methods = sorted(methods)
    if not methods:
        return pd.DataFrame(columns=BT_COLUMNS)
    pairs = method_pairs(methods)
    index = {m: k for k, m in enumerate(methods)}
    pair_of = {p: k for k, p in enumerate(pairs)}
    known = votes[votes["method_a"].isin(index) & votes["method_b"].isin(index)]
    decisive = known[known["decisive"]]
    k_vote = np.array([pair_of[(a, b)] for a, b in zip(decisive["method_a"],
                                                       decisive["method_b"])], dtype=int)
    y = (decisive["label"] == "a").to_numpy(float)
    pair_index = np.array([[index[a], index[b]] for a, b in pairs], dtype=int).reshape(-1, 2)
    n_votes = np.zeros(len(methods), int)
    n_decisive = np.zeros(len(methods), int)
    for col in ("method_a", "method_b"):
        n_votes += known[col].value_counts().reindex(methods, fill_value=0).to_numpy()
        n_decisive += decisive[col].value_counts().reindex(methods, fill_value=0).to_numpy()
    fit = bt_core(pair_index, k_vote, y, decisive["participant_id"].to_numpy(),
                  decisive["item_id"].to_numpy(), methods, n_draws, seed)
    if warn:
        if fit.problem:
            warnings.warn(f"Bradley-Terry scores are NaN: {fit.problem}", stacklevel=2)
        elif fit.cov_note:
            warnings.warn(f"Bradley-Terry intervals: {fit.cov_note}", stacklevel=2)
        elif any(fit.notes):
            warnings.warn("Bradley-Terry: " + ", ".join(
                f"{methods[k]} has no decisive vote (score NaN)"
                for k in range(len(methods)) if fit.notes[k]), stacklevel=2)
    q = np.array([t_quantile(d) for d in fit.df])
    theta, se = fit.theta, fit.se
    low, high = theta - q * se, theta + q * se
    table = pd.DataFrame({
        "method": methods, "score": theta, "se": se, "ci_low": low, "ci_high": high,
        "elo": ELO_BASE + ELO_SCALE * theta, "elo_ci_low": ELO_BASE + ELO_SCALE * low,
        "elo_ci_high": ELO_BASE + ELO_SCALE * high, "rank_ci_low": fit.rank_low,
        "rank_ci_high": fit.rank_high, "n_votes": n_votes, "n_decisive": n_decisive,
        "n_participants": int(decisive["participant_id"].nunique()),
        "n_items": int(decisive["item_id"].nunique()), "note": fit.notes,
    })
    table["rank"] = table["score"].rank(ascending=False, method="min")
    finite = np.isfinite(table["ci_low"]) & np.isfinite(table["ci_high"])
    table["rank_by_ci"] = [1 + int((table["ci_low"][finite] > h).sum()) if ok else np.nan
                           for h, ok in zip(table["ci_high"], finite)]
    table["test"] = "Bradley-Terry MLE on decisive votes (ties set aside), " + TEST_NAME
    table["interval"] = INTERVAL
    table["correction"] = "none (per-method intervals)"
    table["alpha"] = alpha
    table["bootstrap_rounds"] = 0
    return table.sort_values(["rank", "method"], na_position="last")[BT_COLUMNS].reset_index(
        drop=True)


def count_matrices(votes: pd.DataFrame, bt: pd.DataFrame,
                   methods: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(decisive wins of row over column, BT-predicted P(row over column | decisive))."""
    methods = sorted(methods)
    counts = pd.DataFrame(0, index=methods, columns=methods)
    decisive = votes[votes["decisive"] & votes["method_a"].isin(methods)
                     & votes["method_b"].isin(methods)]
    for (a, b, label), n in decisive.groupby(["method_a", "method_b", "label"]).size().items():
        winner, loser = (a, b) if label == "a" else (b, a)
        counts.loc[winner, loser] += int(n)
    score = bt.set_index("method")["score"].reindex(methods).to_numpy(float)
    values = expit(score[:, None] - score[None, :])
    np.fill_diagonal(values, np.nan)
    predicted = pd.DataFrame(values, index=methods, columns=methods)
    counts.index.name = predicted.index.name = "row_over_column"
    return counts, predicted
