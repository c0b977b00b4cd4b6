"""Study configuration, including the pre-registered exclusion rule (recorded in the database)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StudyConfig:
    """Design parameters of one study run; every change is recorded in ``study_config``."""

    trials_per_participant: int = 40
    check_every: int = 10          # one check trial per block of this many (A.9.4: ~1 in 10)
    check_offset: int = 5          # position of the check inside each block (1-based)
    fast_threshold_s: float = 1.5  # answers faster than this are flagged (A.9.7)
    hold_timeout_s: float = 1800.0  # a served, unanswered trial counts as a hold this long
    max_votes_per_cell: int | None = None  # cap per (item, method pair); None = unlimited
    exclude_attention_failures: int = 2    # exclude a participant failing >= this many attention checks
    exclude_fast_fraction: float = 0.5     # ... or answering >= this fraction of trials too fast
    completion_code: str | None = None     # a fixed study code (e.g. Prolific); else per participant
    zoom_window: int = 384                 # side of the full-resolution zoom crop in pixels

    def exclusion_rule(self) -> str:
        return (
            f"exclude all votes of a participant who fails >= {self.exclude_attention_failures} "
            f"attention checks (answer != the intact side) or answers >= {self.exclude_fast_fraction:.0%} "
            f"of trials in < {self.fast_threshold_s:g} s; repeated-pair inconsistency is reported, "
            f"not used for exclusion; excluded votes stay in the export with excluded=1"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "StudyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    @classmethod
    def from_json_file(cls, path: str | Path) -> "StudyConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
