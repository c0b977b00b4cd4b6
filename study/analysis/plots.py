"""Figures for the report: win-rate matrix, Bradley-Terry scores, hallucination rates.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend), so they are safe
in a server thread and in tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def win_rate_matrix(pairwise: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Row method's win rate against the column method over decisive votes (NaN if none)."""
    methods = sorted(methods)
    matrix = pd.DataFrame(np.nan, index=methods, columns=methods)
    for _, r in pairwise.iterrows():
        matrix.loc[r["method_a"], r["method_b"]] = r["win_rate_a"]
        matrix.loc[r["method_b"], r["method_a"]] = 1 - r["win_rate_a"]
    return matrix


def plot_win_rate_matrix(pairwise: pd.DataFrame, methods: list[str]) -> Figure:
    matrix = win_rate_matrix(pairwise, methods)
    size = 1.5 + 0.9 * max(len(matrix), 1)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(matrix.to_numpy(float), vmin=0, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(matrix)), matrix.index)
    for (i, j), v in np.ndenumerate(matrix.to_numpy(float)):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9)
    ax.set_title("Win rate of row over column (decisive votes)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def _interval_plot(labels: list[str], value: np.ndarray, low: np.ndarray, high: np.ndarray,
                   xlabel: str, title: str, reference: float | None) -> Figure:
    fig = Figure(figsize=(6, 1 + 0.5 * max(len(labels), 1)))
    ax = fig.subplots()
    y = np.arange(len(labels))
    # a bootstrap percentile interval need not contain the full-data estimate: clip, don't fail
    errors = np.clip(np.vstack([value - low, high - value]), 0, None)
    ax.errorbar(value, y, xerr=np.nan_to_num(errors), fmt="o", capsize=4)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    if reference is not None:
        ax.axvline(reference, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_bradley_terry(bt: pd.DataFrame) -> Figure:
    return _interval_plot(list(bt["method"]), bt["score"].to_numpy(float),
                          bt["ci_low"].to_numpy(float), bt["ci_high"].to_numpy(float),
                          "Bradley-Terry score (log-odds, sum to zero)",
                          "Bradley-Terry scores, 95% participant bootstrap", 0.0)


def plot_hallucination(rates: pd.DataFrame) -> Figure:
    return _interval_plot(list(rates["method"]), rates["rate"].to_numpy(float),
                          rates["ci_low"].to_numpy(float), rates["ci_high"].to_numpy(float),
                          "share of appearances flagged", "Hallucination rate, 95% Wilson", None)


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path
