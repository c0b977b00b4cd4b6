"""Per-participant quality figures and the exclusion verdict (reported, never silent)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from study.config import StudyConfig
from study.db import Participant, Trial, Vote


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
        select(Participant.id, Trial.id, Trial.kind, Trial.expected, Trial.repeat_of, Vote.choice, Vote.fast)
        .join(Trial, Trial.participant_id == Participant.id)
        .join(Vote, Vote.trial_id == Trial.id)
        .order_by(Participant.id, Trial.seq)
    ).all()
    by_participant: dict[int, list] = {}
    for row in rows:
        by_participant.setdefault(row[0], []).append(row)
    result = []
    for pid, votes in by_participant.items():
        choice_of = {trial_id: choice for _, trial_id, _, _, _, choice, _ in votes}
        attention = [(exp, ch) for _, _, kind, exp, _, ch, _ in votes if kind == "attention"]
        repeats = [(rep, ch) for _, _, kind, _, rep, ch, _ in votes if kind == "repeat" and rep in choice_of]
        failed = sum(ch != exp for exp, ch in attention)
        inconsistent = sum(_flip(choice_of[rep]) != ch for rep, ch in repeats)
        fast = sum(bool(v[6]) for v in votes)
        reasons = []
        if failed >= config.exclude_attention_failures:
            reasons.append(f"failed {failed}/{len(attention)} attention checks")
        if votes and fast / len(votes) >= config.exclude_fast_fraction:
            reasons.append(f"{fast}/{len(votes)} answers faster than {config.fast_threshold_s:g} s")
        result.append(ParticipantQuality(
            participant=f"p{pid:04d}", votes=len(votes), attention_total=len(attention),
            attention_failed=failed, repeat_total=len(repeats), repeat_inconsistent=inconsistent,
            fast=fast, left_chosen=sum(v[5] == "left" for v in votes),
            excluded=bool(reasons), reason="; ".join(reasons)))
    return result


def exclusions_for(session: Session, config_dict: dict | None) -> dict[int, ParticipantQuality]:
    """Quality verdicts keyed by participant row id, under the recorded configuration."""
    config = StudyConfig.from_dict(config_dict)
    return {int(q.participant[1:]): q for q in participant_quality(session, config)}
