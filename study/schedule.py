"""The trial schedule, as pure functions: method pairs, check positions, cell choice, sides.

Design (reference notes A.9.1-A.9.2): the server assigns every trial. A main trial goes to the
least-annotated (item, method-pair) cell the participant has not seen, counting served but
unanswered trials as holds (potato's ``least_annotated``); ties are broken by the participant's
item variety, then by a keyed hash so different participants walk the cells in different orders.
Sides come from ``blake2b(participant, item, pair)`` (stable across restarts, unlike ``hash()``),
overridden only to keep each participant's left/right split at 50/50 within one trial.
"""
from __future__ import annotations

import hashlib
import itertools
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


def trial_kind(seq: int, check_every: int, check_offset: int) -> Kind:
    """Position ``seq`` (1-based): one check per block of ``check_every``, alternating
    attention (broken vs intact output) and repeat (an earlier pair, sides swapped)."""
    if check_every <= 0 or seq < check_offset or (seq - check_offset) % check_every:
        return "main"
    return "attention" if ((seq - check_offset) // check_every) % 2 == 0 else "repeat"


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
