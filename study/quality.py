"""Per-participant quality figures and the exclusion verdict (reported, never silent).

The verdict is ``study.exclusion``'s rule, the same function the export and the analysis apply.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from study.config import StudyConfig
from study.db import Participant, Trial, Vote
from study.exclusion import participant_verdicts


@dataclass
class ParticipantQuality:
    participant: str
    votes: int
    attention_total: int
    attention_failed: int
    repeat_total: int
    repeat_inconsistent: int
    fast: int
    left_chosen: int
    excluded: bool
    reason: str


def _flip(choice: str) -> str:
    return {"left": "right", "right": "left"}.get(choice, choice)


def participant_quality(session: Session, config: StudyConfig) -> list[ParticipantQuality]:
    rows = session.execute(
        select(Participant.id, Trial.id, Trial.kind, Trial.expected, Trial.repeat_of, Vote)
        .join(Trial, Trial.participant_id == Participant.id)
        .join(Vote, Vote.trial_id == Trial.id)
        .order_by(Participant.id, Trial.seq)
    ).all()
    if not rows:
        return []
    frame = pd.DataFrame({
        "participant_id": [f"p{r[0]:04d}" for r in rows], "trial_id": [r[1] for r in rows],
        "trial_kind": [r[2] for r in rows], "expected_choice": [r[3] or "" for r in rows],
        "repeat_of": [r[4] for r in rows], "choice": [r[5].choice for r in rows],
        "latency_ms": [r[5].response_ms for r in rows]})
    verdicts = participant_verdicts(frame, config.rule).set_index("participant_id")
    result = []
    for pid, votes in frame.groupby("participant_id", sort=True):
        choice_of = dict(zip(votes.trial_id, votes.choice))
        repeats = votes[(votes.trial_kind == "repeat") & votes.repeat_of.isin(list(choice_of))]
        verdict = verdicts.loc[pid]
        result.append(ParticipantQuality(
            participant=pid, votes=len(votes), attention_total=int(verdict.attention_trials),
            attention_failed=int(verdict.attention_trials - verdict.attention_passed),
            repeat_total=len(repeats),
            repeat_inconsistent=int(sum(_flip(choice_of[int(rep)]) != ch
                                        for rep, ch in zip(repeats.repeat_of, repeats.choice))),
            fast=int(verdict.n_fast), left_chosen=int((votes.choice == "left").sum()),
            excluded=bool(verdict.excluded), reason=str(verdict.reason)))
    return result
