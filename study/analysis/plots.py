"""Figures for the report: win-rate matrix, Bradley-Terry scores, hallucination rates.

Every figure shows its intervals and sample sizes, and no axis is cut so as to exaggerate a
difference: shares are drawn from 0 (hallucination rates) or on the full 0-1 colour scale (win
rates), scores around their sum-to-zero reference. Built on ``matplotlib.figure.Figure``
directly (no pyplot state, no GUI backend), so they are safe in a server thread and in tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def win_rate_matrix(pairwise: pd.DataFrame, methods: list[str],
                    column: str = "win_rate_a") -> pd.DataFrame:
    """Row method's win rate against the column method over decisive votes (NaN if none)."""
    methods = sorted(methods)
    matrix = pd.DataFrame(np.nan, index=methods, columns=methods)
    for _, r in pairwise.iterrows():
        matrix.loc[r["method_a"], r["method_b"]] = r[column]
        matrix.loc[r["method_b"], r["method_a"]] = 1 - r[column]
    return matrix


def plot_win_rate_matrix(pairwise: pd.DataFrame, methods: list[str]) -> Figure:
    matrix = win_rate_matrix(pairwise, methods)
    methods = list(matrix.index)
    size = 2.0 + 1.3 * max(len(matrix), 1)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(matrix.to_numpy(float), vmin=0, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(matrix)), matrix.index)
    for _, r in pairwise.iterrows():
        i, j = methods.index(r["method_a"]), methods.index(r["method_b"])
        n = int(r["wins_a"] + r["wins_b"])
        for row, col, flip in ((i, j, False), (j, i, True)):
            rate = matrix.iat[row, col]
            if np.isnan(rate):
                ax.text(col, row, f"n={n}", ha="center", va="center", fontsize=7)
                continue
            low, high = (1 - r["ci_high"], 1 - r["ci_low"]) if flip else (r["ci_low"],
                                                                          r["ci_high"])
            star = "*" if r["significant"] else ""
            ax.text(col, row, f"{rate:.2f}{star}\n[{low:.2f}, {high:.2f}]\nn={n}", ha="center",
                    va="center", fontsize=7)
    ax.set_title("Win rate of row over column (decisive votes)\n"
                 "95% CI two-way clustered (rater x image); * Holm-significant", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def _interval_plot(labels: list[str], value: np.ndarray, low: np.ndarray, high: np.ndarray,
                   xlabel: str, title: str, reference: float | None,
                   xlim: tuple[float, float] | None = None, empty_note: str = "") -> Figure:
    fig = Figure(figsize=(6.5, 1.2 + 0.5 * max(len(labels), 1)))
    ax = fig.subplots()
    y = np.arange(len(labels))
    shown = np.isfinite(value)
    # intervals are drawn as computed; a point outside its interval is not hidden
    errors = np.abs(np.vstack([value - low, high - value]))
    ax.errorbar(value[shown], y[shown], xerr=np.nan_to_num(errors[:, shown]), fmt="o", capsize=4)
    for k in np.flatnonzero(~shown):
        ax.text(0.5, k, "undefined", transform=ax.get_yaxis_transform(), ha="center",
                va="center", color="grey")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    if reference is not None:
        ax.axvline(reference, color="grey", lw=0.8, ls="--")
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title + (f"\n{empty_note}" if empty_note else ""), fontsize=9)
    fig.tight_layout()
    return fig


def plot_bradley_terry(bt: pd.DataFrame) -> Figure:
    labels = [f"{m} (n={n})" for m, n in zip(bt["method"], bt.get("n_decisive", bt["n_votes"]))]
    value = bt["score"].to_numpy(float)
    low, high = bt["ci_low"].to_numpy(float), bt["ci_high"].to_numpy(float)
    finite = np.concatenate([v[np.isfinite(v)] for v in (value, low, high)] + [np.zeros(1)])
    span = max(np.abs(finite).max() * 1.15, 0.25)
    note = "" if np.isfinite(value).any() or bt.empty else str(bt["note"].iloc[0])[:90]
    return _interval_plot(labels, value, low, high,
                          "Bradley-Terry score (log-odds, sum to zero; decisive votes)",
                          "Bradley-Terry scores, 95% CI two-way clustered (rater x image)", 0.0,
                          (-span, span), note)


def plot_hallucination(rates: pd.DataFrame) -> Figure:
    labels = [f"{m} (n={n})" for m, n in zip(rates["method"], rates["n_appearances"])]
    high = rates["ci_high"].to_numpy(float)
    top = np.nanmax(np.append(high[np.isfinite(high)], 0.05))
    return _interval_plot(labels, rates["rate"].to_numpy(float),
                          rates["ci_low"].to_numpy(float), high,
                          "share of appearances flagged (axis from 0)",
                          "Hallucination rate, 95% CI two-way clustered (rater x image)", None,
                          (0.0, min(1.0, top * 1.15)))


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path
