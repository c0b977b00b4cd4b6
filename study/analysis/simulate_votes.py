"""Synthetic votes with known truth, for validating the statistics (not the serving harness).

Votes follow a Bradley-Terry model: given a decisive vote, P(i over j) = sigmoid(theta_i -
theta_j [+ left_bias if i is on the left] [+ participant deviation] [+ drift] [+ item effect]).
The participant deviation is a per-participant, per-method normal offset (taste); drift moves it
linearly over the session (a second normal offset, scaled from 0 at the first trial to 1 at the
last); the item effect is a per-item, per-method normal offset (an image on which a method does
unusually well). Each participant sees the items in a fresh random order, each at most once per
pass. Ties occur with a fixed probability, split evenly into both_good / both_bad. Each side is flagged as hallucinated with its
method's rate. Careless participants answer uniformly at random on every trial, attention checks
included. The output is the canonical votes table that ``study export`` writes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from study.analysis.pairwise import method_pairs

ATTENTION_GOOD, ATTENTION_BROKEN = "attention_reference", "attention_broken"
_START = pd.Timestamp("2025-01-01T00:00:00Z")


def _choices(rng: np.random.Generator, p_left: np.ndarray, tie_rate: float,
             careless: np.ndarray) -> np.ndarray:
    u = rng.random(len(p_left))
    tie = rng.random(len(p_left)) < tie_rate
    decided = np.where(u < p_left, "left", "right")
    tied = np.where(rng.random(len(p_left)) < 0.5, "both_good", "both_bad")
    careful = np.where(tie, tied, decided)
    return np.where(careless, rng.choice(["left", "right", "both_good", "both_bad"],
                                         len(p_left)), careful)


def simulate_votes(methods: Sequence[str], strengths: Mapping[str, float] | None = None,
                   *, tie_rate: float = 0.2, halluc_rates: Mapping[str, float] | None = None,
                   n_participants: int = 20, votes_per_participant: int = 30, n_items: int = 40,
                   attention_per_participant: int = 3, repeats_per_participant: int = 2,
                   careless_share: float = 0.0, participant_sd: float = 0.0,
                   drift_sd: float = 0.0, item_sd: float = 0.0,
                   left_bias: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Canonical votes table for a simulated study.

    ``strengths``: true BT scores (log-odds; default all equal = no preference).
    ``halluc_rates``: per-method flag probability (default 0.1). Pairs rotate across each
    participant's main trials so all pairs get (nearly) equal counts; sides are random.
    ``participant_sd``: SD of each participant's own deviation from the true strengths (creates
    within-participant correlation); ``drift_sd``: SD of the extra offset reached by the last
    trial; ``item_sd``: SD of the per-item, per-method offsets (between-item correlation).
    """
    rng = np.random.default_rng(seed)
    methods = list(methods)
    theta = np.array([(strengths or {}).get(m, 0.0) for m in methods])
    halluc = np.array([(halluc_rates or {}).get(m, 0.1) for m in methods])
    index = {m: k for k, m in enumerate(methods)}
    pairs = np.array([[index[a], index[b]] for a, b in method_pairs(methods)])
    n_careless = int(round(careless_share * n_participants))
    careless_people = np.arange(n_participants) < n_careless
    deviation = rng.normal(0, participant_sd, (n_participants, len(methods)))
    drift = rng.normal(0, drift_sd, (n_participants, len(methods)))
    item_effect = rng.normal(0, item_sd, (n_items, len(methods)))

    # main trials
    person = np.repeat(np.arange(n_participants), votes_per_participant)
    trial = np.tile(np.arange(votes_per_participant), n_participants)
    pair = pairs[(trial + person) % len(pairs)]
    swap = rng.random(len(person)) < 0.5
    left, right = np.where(swap, pair[:, 1], pair[:, 0]), np.where(swap, pair[:, 0], pair[:, 1])
    passes = -(-votes_per_participant // n_items)
    item = np.concatenate([np.concatenate([rng.permutation(n_items) for _ in range(passes)])
                           [:votes_per_participant] for _ in range(n_participants)])
    frames = [dict(person=person, seq=trial * 10.0, item=item, left=left, right=right,
                   kind="main")]

    # repeats: an earlier main trial of the same participant, sides swapped
    if repeats_per_participant:
        rep_person = np.repeat(np.arange(n_participants), repeats_per_participant)
        source = rep_person * votes_per_participant + np.concatenate([  # distinct per person
            rng.choice(votes_per_participant, repeats_per_participant, replace=False)
            for _ in range(n_participants)])
        frames.append(dict(person=rep_person, seq=votes_per_participant * 10.0 + np.arange(
            len(rep_person)), item=item[source], left=right[source], right=left[source],
            kind="repeat"))
    tables = []
    for f in frames:
        t = pd.DataFrame(f)
        who, lt, rt = t["person"].to_numpy(), t["left"].to_numpy(), t["right"].to_numpy()
        progress = np.clip(t["seq"].to_numpy() / max(10.0 * (votes_per_participant - 1), 1), 0, 1)
        d = (theta[lt] - theta[rt] + left_bias
             + deviation[who, lt] - deviation[who, rt]
             + progress * (drift[who, lt] - drift[who, rt])
             + item_effect[t["item"].to_numpy(), lt] - item_effect[t["item"].to_numpy(), rt])
        t["choice"] = _choices(rng, 1 / (1 + np.exp(-d)), tie_rate,
                               careless_people[t["person"]])
        t["method_left"] = np.array(methods)[t["left"]]
        t["method_right"] = np.array(methods)[t["right"]]
        t["halluc_left"] = (rng.random(len(t)) < halluc[t["left"]]).astype(int)
        t["halluc_right"] = (rng.random(len(t)) < halluc[t["right"]]).astype(int)
        t["expected_choice"] = ""
        tables.append(t)

    # attention checks: a reference edit against a visibly broken one, at random positions
    if attention_per_participant:
        att_person = np.repeat(np.arange(n_participants), attention_per_participant)
        good_left = rng.random(len(att_person)) < 0.5
        careful_pick = np.where(rng.random(len(att_person)) < 0.98,
                                np.where(good_left, "left", "right"),
                                np.where(good_left, "right", "left"))
        careless_pick = rng.choice(["left", "right", "both_good", "both_bad"], len(att_person))
        tables.append(pd.DataFrame(dict(
            person=att_person, seq=rng.uniform(0, votes_per_participant * 10.0, len(att_person)),
            item=rng.integers(0, n_items, len(att_person)), kind="attention",
            choice=np.where(careless_people[att_person], careless_pick, careful_pick),
            method_left=np.where(good_left, ATTENTION_GOOD, ATTENTION_BROKEN),
            method_right=np.where(good_left, ATTENTION_BROKEN, ATTENTION_GOOD),
            halluc_left=0, halluc_right=0,
            expected_choice=np.where(good_left, "left", "right"))))

    votes = pd.concat(tables, ignore_index=True).sort_values(["person", "seq"], kind="stable")
    careless = careless_people[votes["person"]]
    latency_s = np.where(careless, rng.uniform(0.4, 1.2, len(votes)),
                         rng.lognormal(np.log(6.0), 0.5, len(votes)))
    served = _START + pd.to_timedelta(votes["person"] * 86400 + votes["seq"] * 2, unit="s")
    answered = served + pd.to_timedelta(latency_s, unit="s")
    return pd.DataFrame({
        "participant_id": [f"p{p:03d}" for p in votes["person"]],
        "item_id": [f"item{i:03d}" for i in votes["item"]],
        "method_left": votes["method_left"].to_numpy(),
        "method_right": votes["method_right"].to_numpy(),
        "choice": votes["choice"].to_numpy(),
        "halluc_left": votes["halluc_left"].to_numpy(int),
        "halluc_right": votes["halluc_right"].to_numpy(int),
        "trial_kind": votes["kind"].to_numpy(),
        "served_at": served.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_numpy(),
        "answered_at": answered.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_numpy(),
        "expected_choice": votes["expected_choice"].to_numpy(),
        "latency_ms": np.round(latency_s * 1000).astype(int),
    })
