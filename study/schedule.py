"""The trial schedule, as pure functions: method pairs, check positions, cell choice, sides.

Design (reference notes A.9.1-A.9.2): the server assigns every trial. A main trial goes to the
least-annotated (item, method-pair) cell the participant has not seen, counting served but
unanswered trials as holds (potato's ``least_annotated``); ties are broken by the participant's
item variety, then by a keyed hash so different participants walk the cells in different orders.
Sides come from ``blake2b(participant, item, pair)`` (stable across restarts, unlike ``hash()``),
overridden only to keep each participant's left/right split at 50/50 within one trial.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
from typing import Hashable, Iterable, Literal, Mapping

Kind = Literal["main", "attention", "repeat"]


def stable_hash(*parts: object) -> int:
    """Process-independent 64-bit hash of the parts."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def method_pairs(methods: Iterable[str]) -> list[tuple[str, str]]:
    """All unordered pairs, each as a sorted tuple (method_a < method_b)."""
    return list(itertools.combinations(sorted(set(methods)), 2))


def pair_key(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"{first}|{second}"


def check_counts(n_trials: int, min_attention: int, attention_share: float,
                 repeat_share: float) -> tuple[int, int]:
    """(attention checks, repeats) for a participant with ``n_trials`` trials: attention checks
    are ``max(min_attention, ceil(share * n))`` so the exclusion rule can fire at any length,
    repeats ``max(1, round(share * n))`` when ``repeat_share > 0``; at most half the trials are checks."""
    if n_trials <= 0:
        return 0, 0
    attention = max(min_attention, math.ceil(attention_share * n_trials - 1e-9)) if (
        min_attention > 0 or attention_share > 0) else 0
    repeats = max(1, round(repeat_share * n_trials)) if repeat_share > 0 else 0
    attention = min(attention, n_trials // 2)
    repeats = min(repeats, max(0, n_trials // 2 - attention))
    return attention, repeats


@functools.lru_cache(maxsize=256)
def check_plan(n_trials: int, min_attention: int, attention_share: float,
               repeat_share: float) -> dict[int, Kind]:
    """Positions (1-based) of the check trials: evenly spread over the participant's trials,
    repeats spread evenly among the checks and never first (a repeat needs an earlier trial).
    Cached: the returned mapping is shared, do not modify it."""
    attention, repeats = check_counts(n_trials, min_attention, attention_share, repeat_share)
    total = attention + repeats
    plan: dict[int, Kind] = {}
    for j in range(total):
        seq = math.floor((j + 0.5) * n_trials / total) + 1
        is_repeat = (j + 1) * repeats // total > j * repeats // total
        plan[seq] = "repeat" if is_repeat else "attention"
    return plan


def trial_kind(seq: int, plan: Mapping[int, Kind]) -> Kind:
    return plan.get(seq, "main")


def choose_cell(
    candidates: Iterable[tuple[str, str]],
    load: Mapping[tuple[str, str], int],
    item_views: Mapping[str, int],
    participant: str,
) -> tuple[str, str] | None:
    """Least-annotated (item, pair) cell first, then the item this participant saw least,
    then a per-participant hash order."""
    best = None
    best_key = None
    for cell in candidates:
        key = (load.get(cell, 0), item_views.get(cell[0], 0), stable_hash(participant, *cell))
        if best_key is None or key < best_key:
            best, best_key = cell, key
    return best


def first_on_left(participant: str, item: str, pair: Hashable, n_first_left: int, n_first_right: int) -> bool:
    """Whether the pair's first element goes on the left: hashed, but never letting the
    participant's running split drift more than one trial from 50/50."""
    if n_first_left > n_first_right:
        return False
    if n_first_right > n_first_left:
        return True
    return stable_hash("side", participant, item, pair) % 2 == 0
