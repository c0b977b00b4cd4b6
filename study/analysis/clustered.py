"""Two-way cluster-robust inference: the uncertainty model behind every decision in the analysis.

A vote is correlated with the other votes of the same *participant* (taste, attention, drift over
the session) and with the other votes on the same *item* (an image on which one method happens to
do well). Treating votes as independent makes tests reject far too often (issue 18's audit: a
Holm-corrected sign test had a family-wise error of .24 with image effects). Every estimate here
solves an estimating equation ``sum_v s_v(beta) = 0`` (a mean, a difference of means, a logistic
Bradley-Terry model), and its covariance is the sandwich ``H^-1 M H^-1`` with the two-way
cluster-robust meat of Cameron, Gelbach and Miller (2011)::

    M = c_P * sum_p S_p S_p'  +  c_I * sum_i S_i S_i'  -  c_PI * sum_(p,i) S_pi S_pi'

``S_p`` summing the scores of participant p, ``S_i`` of item i and ``S_pi`` of the votes that
participant p gave on item i (the intersection, subtracted once because it is counted in both).
``c_G = G / (G - 1) * (N - 1) / (N - K)`` is the usual CRV1 small-sample factor (G clusters, N
observations, K parameters), exactly as in statsmodels' ``cov_cluster_2groups``; the tests check
the two agree. When the combination is not positive semi-definite (possible in small samples), the
larger of the two one-way covariances is used instead and the result says so. Tests and intervals
use Student's t with Satterthwaite degrees of freedom for this variance estimator (the
Bell-McCaffrey approach, computed under a working independence model: ``df = tr(B S)^2 /
tr((B S)^2)`` for the quadratic form ``V = u' B u`` that the meat is, in closed form from the
cluster sizes below), capped at ``min(G_P, G_I) - 1`` (Cameron & Miller 2015). The residual
variance estimate of a few dozen clusters is itself noisy, and a normal or ``G - 1`` reference
makes the small p-values that Holm's first steps need too small (simulation: size .014 at a
nominal .0083 with ``G - 1``, .011 with Satterthwaite). A study with few participants or items
gets wide intervals, and one with a single participant or item gets none (NaN, never a
zero-width interval).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

TEST_NAME = "two-way cluster-robust Wald t (participant x item)"
INTERVAL_NAME = "two-way cluster-robust"


def codes(values) -> np.ndarray:
    """Non-negative integer codes of any labels (integer input is used as it is: codes need not
    be contiguous, empty codes are not counted as clusters)."""
    values = np.asarray(values)
    if values.dtype.kind in "iu" and (len(values) == 0 or values.min() >= 0):
        return values.astype(np.int64, copy=False).ravel()
    return np.unique(values, return_inverse=True)[1].ravel().astype(np.int64)


def _cells(participant: np.ndarray, item: np.ndarray) -> np.ndarray:
    return participant * (int(item.max()) + 1 if len(item) else 1) + item


def _group_meat(scores: np.ndarray, group: np.ndarray, n_params: int) -> tuple[np.ndarray, int]:
    """``(c_G * sum_g S_g S_g', G)`` for one clustering (G = non-empty groups)."""
    size = np.bincount(group)
    sums = np.stack([np.bincount(group, weights=scores[:, c], minlength=len(size))
                     for c in range(scores.shape[1])], axis=1)[size > 0]
    n_groups = len(sums)
    n = len(scores)
    if n_groups < 2 or n <= n_params:
        return np.full((scores.shape[1],) * 2, np.nan), n_groups
    factor = n_groups / (n_groups - 1) * (n - 1) / (n - n_params)
    return factor * sums.T @ sums, n_groups


def satterthwaite_df(q2: np.ndarray, participant: np.ndarray, item: np.ndarray) -> float:
    """Satterthwaite degrees of freedom of the two-way CRV1 variance of ``sum_v w_v u_v``.

    ``q2 = w_v^2 var(u_v)`` under working independence. The variance estimate is the quadratic
    form ``sum_k s_k c_k sum_(g in k) (sum_(v in g) w_v u_v)^2`` over the clusterings k =
    participant (+), item (+), participant x item (-); with ``S = diag(var u)`` its
    ``tr(B S) = (c_P + c_I - c_PI) sum q2`` and ``tr((B S)^2) = sum_(k,l) s_k s_l c_k c_l
    sum_(g in k, h in l) (sum_(v in g and h) q2)^2``, where every cross term between different
    clusterings reduces to sums over the participant x item cells.
    """
    q2 = np.asarray(q2, float)
    participant, item = codes(participant), codes(item)
    sums = [np.bincount(g, weights=q2) for g in (participant, item, _cells(participant, item))]
    g_p, g_i, g_c = (int((np.bincount(g) > 0).sum())
                     for g in (participant, item, _cells(participant, item)))
    if min(g_p, g_i) < 2 or q2.sum() <= 0:
        return float("nan")
    c_p, c_i = g_p / (g_p - 1), g_i / (g_i - 1)
    c_c = g_c / (g_c - 1) if g_c > 1 else 0.0
    s_p, s_i, s_c = ((x ** 2).sum() for x in sums)
    trace = (c_p + c_i - c_c) * q2.sum()
    trace2 = (c_p ** 2 * s_p + c_i ** 2 * s_i + c_c ** 2 * s_c
              + 2 * (c_p * c_i - c_p * c_c - c_i * c_c) * s_c)
    if trace <= 0 or trace2 <= 0:
        return float(min(g_p, g_i) - 1)
    return float(min(trace ** 2 / trace2, min(g_p, g_i) - 1))


@dataclass
class RobustCov:
    """A two-way cluster-robust covariance and what it rests on."""

    cov: np.ndarray
    n_participants: int
    n_items: int
    df: float
    note: str = ""


def twoway_cov(scores: np.ndarray, bread: np.ndarray, participant: np.ndarray,
               item: np.ndarray) -> RobustCov:
    """Sandwich covariance ``bread @ M @ bread`` with the two-way meat described above.

    ``scores``: ``(N, K)`` per-observation estimating-function values at the estimate;
    ``bread``: ``(K, K)`` inverse of the (positive) Hessian of the summed estimating function;
    ``participant``, ``item``: integer codes (0..G-1) per observation.
    """
    scores = np.asarray(scores, float).reshape(len(scores), -1)
    k = scores.shape[1]
    if len(scores) == 0:
        return RobustCov(np.full((k, k), np.nan), 0, 0, np.nan, "no observations")
    participant, item = codes(participant), codes(item)
    meat_p, g_p = _group_meat(scores, participant, k)
    meat_i, g_i = _group_meat(scores, item, k)
    meat_pi, _ = _group_meat(scores, _cells(participant, item), k)
    df = min(g_p, g_i) - 1.0
    if min(g_p, g_i) < 2:
        return RobustCov(np.full((k, k), np.nan), g_p, g_i, np.nan,
                         f"undefined with {g_p} participant(s) and {g_i} item(s): "
                         "needs at least 2 of each")
    if np.isnan(meat_pi).any():  # every observation its own cell: intersection = HC term
        meat_pi = np.zeros((k, k))
    cov = bread @ (meat_p + meat_i - meat_pi) @ bread
    note = ""
    smallest = cov[0, 0] if k == 1 else np.linalg.eigvalsh((cov + cov.T) / 2).min()
    if smallest < -1e-12 * max(np.abs(cov).max(), 1e-300):
        one_way = [bread @ meat_p @ bread, bread @ meat_i @ bread]
        cov = max(one_way, key=np.trace)
        note = "two-way combination not positive semi-definite: larger one-way covariance used"
    return RobustCov((cov + cov.T) / 2, g_p, g_i, df, note)


@dataclass
class MeanEstimate:
    """A clustered mean (a proportion when the values are 0/1)."""

    mean: float
    se: float
    n: int
    n_participants: int
    n_items: int
    df: float
    design_effect: float
    note: str = ""

    def t_test(self, null: float) -> float:
        """Two-sided p-value of ``mean == null``; NaN when the variance is undefined."""
        if not np.isfinite(self.se) or not np.isfinite(self.df):
            return float("nan")
        if self.se == 0:
            return 0.0 if self.mean != null else 1.0
        return float(2 * student_t.sf(abs(self.mean - null) / self.se, self.df))

    def t_interval(self, level: float = 0.95) -> tuple[float, float]:
        if not np.isfinite(self.se) or not np.isfinite(self.df):
            return float("nan"), float("nan")
        q = student_t.ppf(0.5 + level / 2, self.df)
        return self.mean - q * self.se, self.mean + q * self.se

    def wilson_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Wilson score interval on the effective sample size ``n / design_effect`` with the t
        quantile (Korn & Graubard 1998): stays inside [0, 1], reduces to Wilson when votes are
        independent, widens with clustering. The design effect is floored at 1 (never narrower
        than Wilson) and taken as 1 when the estimate is 0 or 1 (its variance estimate is 0)."""
        if not np.isfinite(self.df) or self.n == 0:
            return float("nan"), float("nan")
        n_eff = self.n / self.design_effect
        z = student_t.ppf(0.5 + level / 2, self.df)
        p = self.mean
        centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
        half = z / (1 + z * z / n_eff) * np.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff ** 2))
        return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def clustered_mean(values: np.ndarray, participant: np.ndarray, item: np.ndarray,
                   null_for_degenerate: float | None = None) -> MeanEstimate:
    """Mean of ``values`` with its two-way cluster-robust standard error.

    Estimating function ``s_v = y_v - mean`` (K = 1), bread ``1 / N``: the same numbers as an
    intercept-only OLS with ``cov_cluster_2groups``. ``design_effect`` is the robust variance over
    the independent-votes variance ``var(y) / N``, floored at 1. When every value is equal the
    residual variance is 0; with ``null_for_degenerate`` given, the scores are then centred at
    that null value instead (a score-test variance), so a method winning every vote still gets a
    finite test rather than p = 0 from a zero standard error.
    """
    y = np.asarray(values, float)
    n = len(y)
    if n == 0:
        return MeanEstimate(np.nan, np.nan, 0, 0, 0, np.nan, np.nan, "no observations")
    mean = float(y.mean())
    centre = mean
    if null_for_degenerate is not None and np.ptp(y) == 0:
        centre = null_for_degenerate
    robust = twoway_cov((y - centre)[:, None], np.array([[1.0 / n]]), participant, item)
    var = float(robust.cov[0, 0])
    df = satterthwaite_df(np.ones(n), participant, item) if np.isfinite(robust.df) else np.nan
    naive = mean * (1 - mean) / n if np.isin(y, (0, 1)).all() else float(y.var()) / n
    deff = max(var / naive, 1.0) if naive > 0 and np.isfinite(var) else (
        1.0 if np.isfinite(var) else np.nan)
    return MeanEstimate(mean, float(np.sqrt(var)) if np.isfinite(var) else np.nan, n,
                        robust.n_participants, robust.n_items, df, deff, robust.note)


def t_p_value(estimate: np.ndarray, se: np.ndarray, df: float, null: float = 0.0) -> np.ndarray:
    """Two-sided Wald-t p-values (NaN where the standard error or df is undefined)."""
    estimate, se = np.asarray(estimate, float), np.asarray(se, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = np.abs(estimate - null) / se
    p = 2 * student_t.sf(stat, df) if np.isfinite(df) else np.full_like(stat, np.nan)
    return np.where(np.isfinite(se) & (se > 0), p, np.nan)


def t_quantile(df: float, level: float = 0.95) -> float:
    return float(student_t.ppf(0.5 + level / 2, df)) if np.isfinite(df) and df > 0 else np.nan
