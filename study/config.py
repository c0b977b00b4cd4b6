"""Study configuration, including the pre-registered exclusion rule (recorded in the database)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.exclusion import ExclusionRule


@dataclass(frozen=True)
class StudyConfig:
    """Design parameters of one study run; every change is recorded in ``study_config``."""

    trials_per_participant: int = 40
    # check trials, scaled to the number of trials (A.9.4: ~1 in 10, at least enough for the rule)
    min_attention_checks: int = 5    # every participant gets at least this many attention checks
    attention_share: float = 0.1     # ... or this share of their trials, whichever is more
    repeat_share: float = 0.05       # repeated pairs (sides swapped): this share, at least one
    fast_threshold_s: float = 1.5    # answers faster than this (client-measured) are flagged (A.9.7)
    hold_timeout_s: float = 600.0    # a served, unanswered trial counts as a hold this long ...
    consent_hold_s: float = 60.0     # ... but a participant's first trial only this long
    max_votes_per_cell: int | None = None  # cap per (item, method pair); None = unlimited
    min_attention_pass: float = 0.8  # exclusion: passed share of attention checks below this
    max_fast_share: float = 0.5      # exclusion: ... or this share of answers too fast
    completion_code: str | None = None     # a fixed study code (e.g. Prolific); else one per participant
    zoom_window: int = 384                 # side of the full-resolution zoom crop in pixels
    new_participants_burst: int = 20       # per client address: new participant ids at once ...
    new_participants_per_minute: float = 10.0  # ... then this many per minute

    @property
    def rule(self) -> ExclusionRule:
        return ExclusionRule(min_attention_pass=self.min_attention_pass,
                             fast_threshold_s=self.fast_threshold_s, max_fast_share=self.max_fast_share)

    def exclusion_rule(self) -> str:
        return self.rule.describe()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "StudyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    @classmethod
    def from_json_file(cls, path: str | Path) -> "StudyConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
