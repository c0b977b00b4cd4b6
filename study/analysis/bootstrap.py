"""Participant cluster bootstrap: the uncertainty model shared by every interval that says "boot".

Votes from one participant are correlated (taste, attention, screen), so resampling single votes
understates the variance. Each bootstrap round draws participants with replacement and keeps all
their votes; a round is a vector of multiplicities, so any statistic that is a sum of
per-participant counts is one matrix product per round (the PR #3523 "count weights" trick of
FastChat, applied to participants instead of votes).
"""
from __future__ import annotations

import warnings

import numpy as np


def participant_weights(n_participants: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, n_participants)`` multiplicities of each participant in each round."""
    rng = np.random.default_rng(seed)
    if n_participants == 0 or n_boot == 0:
        return np.zeros((n_boot, n_participants))
    return rng.multinomial(n_participants, np.full(n_participants, 1 / n_participants),
                           size=n_boot).astype(float)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring rounds where the statistic is undefined."""
    tail = (1 - level) / 2 * 100
    if samples.shape[0] == 0:
        return np.full(samples.shape[1:], np.nan), np.full(samples.shape[1:], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
        low = np.nanpercentile(samples, tail, axis=0)
        high = np.nanpercentile(samples, 100 - tail, axis=0)
    return low, high
