"""StudyService: all server-side logic of the participant flow and the admin reports.

The Gradio tab, the JSON API and the in-process simulator are thin shells over this object,
so every path (browser, HTTP, simulation) runs the same code. The server decides the current
trial; a vote names its trial id and is stored at most once (``UNIQUE(votes.trial_id)``).
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from study import schedule
from study.config import StudyConfig
from study.db import (
    BROKEN_METHOD,
    CHOICES,
    Item,
    Output,
    Participant,
    Setting,
    StudyConfigRecord,
    Trial,
    Vote,
    init_db,
    insert_ignore,
    iso,
    latest_config,
    make_engine,
    session_factory,
    utcnow,
)
from study.quality import participant_quality

PUBLIC_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
STIMULUS_NAME = re.compile(r"^[0-9a-f]{16,64}\.png$")
_PG_ASSIGN_LOCK = 0x5EED_57D1  # one advisory lock: trial assignment is serialised on PostgreSQL


class StudyError(ValueError):
    """A request the study refuses (unknown participant, someone else's trial, bad choice)."""


@dataclass
class TrialView:
    """What a participant may see: no method names, no output ids, file names are content hashes."""

    status: str  # consent | trial | done | no_work
    participant: str
    trial_id: Optional[int] = None
    k: int = 0
    n: int = 0
    instruction: str = ""
    source: str = ""
    left: str = ""
    right: str = ""
    completion_code: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VoteResult:
    status: str  # recorded | duplicate
    next: TrialView

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "next": self.next.to_dict()}


@dataclass
class Catalog:
    """Items and outputs available to the schedule (static while serving)."""

    items: dict[str, Item] = field(default_factory=dict)
    outputs: dict[str, dict[str, Output]] = field(default_factory=dict)  # item -> method -> output
    cells: list[tuple[str, str]] = field(default_factory=list)  # (item_id, "a|b")
    by_id: dict[int, Output] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return sorted({m for per in self.outputs.values() for m in per if m != BROKEN_METHOD})


class StudyService:
    def __init__(self, db_url: str | Path, stimuli_dir: str | Path, config: StudyConfig | None = None):
        self.engine = make_engine(db_url)
        init_db(self.engine)
        self.Session = session_factory(self.engine)
        self.stimuli_dir = Path(stimuli_dir).resolve()
        self.config = self._record_config(config)
        self.secret = self._setting("secret", lambda: secrets.token_hex(16))
        self.catalog = self.load_catalog()

    # -- setup ---------------------------------------------------------------------------
    def _record_config(self, config: StudyConfig | None) -> StudyConfig:
        """Use the given configuration (recording it when it differs from the latest record)
        or the latest recorded one."""
        with self.Session.begin() as session:
            latest = latest_config(session)
            if config is None:
                if latest is not None:
                    return StudyConfig.from_dict(latest.config_json)
                config = StudyConfig()
            if latest is None or latest.config_json != config.to_dict():
                session.add(StudyConfigRecord(created_at=utcnow(), config_json=config.to_dict(),
                                              exclusion_rule=config.exclusion_rule()))
        return config

    def _setting(self, key: str, make) -> str:
        with self.Session.begin() as session:
            insert_ignore(session, Setting, {"key": key, "value": make()})
        with self.Session() as session:
            return session.get(Setting, key).value

    def load_catalog(self) -> Catalog:
        catalog = Catalog()
        with self.Session() as session:
            for item in session.scalars(select(Item)):
                catalog.items[item.id] = item
            for out in session.scalars(select(Output).where(Output.failed.is_(False), Output.path.is_not(None))):
                if (self.stimuli_dir / out.path).is_file():
                    catalog.outputs.setdefault(out.item_id, {})[out.method] = out
                    catalog.by_id[out.id] = out
        for item_id in sorted(catalog.outputs):
            methods = [m for m in catalog.outputs[item_id] if m != BROKEN_METHOD]
            catalog.cells += [(item_id, schedule.pair_key(a, b)) for a, b in schedule.method_pairs(methods)]
        self.catalog = catalog
        return catalog

    @property
    def allowed_paths(self) -> list[str]:
        return [str(self.stimuli_dir)]

    def stimulus_path(self, name: str) -> Path:
        """Full path of a served stimulus; only content-hash PNG names inside the directory."""
        if not STIMULUS_NAME.match(name):
            raise StudyError("no such stimulus")
        path = self.stimuli_dir / name
        if not path.is_file():
            raise StudyError("no such stimulus")
        return path

    def rubric_examples(self) -> list[tuple[str, str]]:
        """(path, caption) pairs of the hallucination rubric illustrations written by prepare."""
        from study.stimuli import RUBRIC_EXAMPLES

        out = []
        for name, caption in RUBRIC_EXAMPLES:
            path = self.stimuli_dir / "rubric" / f"{name}.png"
            if path.is_file():
                out.append((str(path), caption))
        return out

    # -- participant flow ----------------------------------------------------------------
    def join(self, public_id: str | None = None) -> str:
        """Register (or find) a participant; a URL id such as a Prolific PID, else a new token."""
        source = "url"
        if not public_id:
            public_id, source = secrets.token_urlsafe(12), "token"
        if not PUBLIC_ID.match(public_id):
            raise StudyError("participant id must be 1-128 letters, digits, '-', '_' or '.'")
        with self.Session.begin() as session:
            insert_ignore(session, Participant, {
                "public_id": public_id, "id_source": source, "created_at": utcnow(),
                "n_trials": self.config.trials_per_participant})
        return public_id

    def consent(self, public_id: str) -> TrialView:
        with self.Session.begin() as session:
            participant = self._participant(session, public_id)
            if participant.consent_at is None:
                participant.consent_at = utcnow()
        return self.current(public_id)

    def current(self, public_id: str) -> TrialView:
        """The participant's current screen; assigns the next trial when none is pending."""
        for attempt in range(3):
            try:
                with self.Session.begin() as session:
                    return self._current(session, public_id)
            except IntegrityError:  # a concurrent request assigned the same position first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def vote(self, public_id: str, trial_id: int, choice: str, halluc_left: bool = False,
             halluc_right: bool = False, client: str = "api") -> VoteResult:
        """Store the vote for ``trial_id`` once; a repeated submission is acknowledged as a duplicate."""
        if choice not in CHOICES:
            raise StudyError(f"choice must be one of {', '.join(CHOICES)}")
        with self.Session.begin() as session:
            participant = self._participant(session, public_id)
            trial = session.get(Trial, int(trial_id))
            if trial is None or trial.participant_id != participant.id:
                raise StudyError("this trial does not belong to this participant")
            answered_at = utcnow()
            latency_ms = int((answered_at - trial.served_at).total_seconds() * 1000)
            inserted = insert_ignore(session, Vote, {
                "trial_id": trial.id, "choice": choice, "halluc_left": bool(halluc_left),
                "halluc_right": bool(halluc_right), "answered_at": answered_at,
                "latency_ms": latency_ms, "fast": latency_ms < self.config.fast_threshold_s * 1000,
                "client": client})
        return VoteResult("recorded" if inserted else "duplicate", self.current(public_id))

    # -- internals -----------------------------------------------------------------------
    def _participant(self, session: Session, public_id: str) -> Participant:
        participant = session.scalars(select(Participant).where(Participant.public_id == public_id)).first()
        if participant is None:
            raise StudyError("unknown participant")
        return participant

    def completion_code(self, public_id: str) -> str:
        if self.config.completion_code:
            return self.config.completion_code
        return f"{schedule.stable_hash(self.secret, public_id):016X}"[:10]

    def _current(self, session: Session, public_id: str) -> TrialView:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ASSIGN_LOCK})
        participant = self._participant(session, public_id)
        if participant.consent_at is None:
            return TrialView("consent", public_id, n=participant.n_trials)
        pending = session.scalars(
            select(Trial).outerjoin(Vote, Vote.trial_id == Trial.id)
            .where(Trial.participant_id == participant.id, Vote.id.is_(None))
            .order_by(Trial.seq).limit(1)).first()
        if pending is not None:
            return self._view(participant, pending)
        if participant.completed_at is not None:
            return self._done(participant)
        done = session.scalar(select(func.count(Trial.id)).where(Trial.participant_id == participant.id))
        trial = None
        if done < participant.n_trials:
            trial = self._assign(session, participant, done + 1)
        if trial is None:
            if done == 0:
                return TrialView("no_work", public_id)
            participant.completed_at = utcnow()
            participant.completion_code = self.completion_code(public_id)
            return self._done(participant)
        session.add(trial)
        session.flush()
        return self._view(participant, trial)

    def _done(self, participant: Participant) -> TrialView:
        return TrialView("done", participant.public_id, k=participant.n_trials, n=participant.n_trials,
                         completion_code=participant.completion_code or "")

    def _view(self, participant: Participant, trial: Trial) -> TrialView:
        item = self.catalog.items[trial.item_id]
        by_id = self.catalog.by_id
        return TrialView("trial", participant.public_id, trial_id=trial.id, k=trial.seq,
                         n=participant.n_trials, instruction=item.instruction, source=item.source_path,
                         left=by_id[trial.left_output_id].path, right=by_id[trial.right_output_id].path)

    def _assign(self, session: Session, participant: Participant, seq: int) -> Trial | None:
        history = session.scalars(select(Trial).where(Trial.participant_id == participant.id)
                                  .order_by(Trial.seq)).all()
        kind = schedule.trial_kind(seq, self.config.check_every, self.config.check_offset)
        trial = None
        if kind == "repeat":
            trial = self._repeat_trial(participant, history, seq)
        elif kind == "attention":
            trial = self._attention_trial(participant, history, seq)
        if trial is None:
            trial = self._main_trial(session, participant, history, seq)
        return trial

    def _new_trial(self, participant: Participant, seq: int, kind: str, item_id: str, pair: str,
                   left: Output, right: Output, **extra) -> Trial:
        return Trial(participant_id=participant.id, seq=seq, kind=kind, item_id=item_id, pair=pair,
                     left_output_id=left.id, right_output_id=right.id, served_at=utcnow(), **extra)

    def _main_trial(self, session: Session, participant: Participant, history: list[Trial], seq: int):
        cutoff = utcnow() - dt.timedelta(seconds=self.config.hold_timeout_s)
        answered = select(Vote.trial_id)
        load_rows = session.execute(
            select(Trial.item_id, Trial.pair, func.count(Trial.id))
            .where(Trial.kind == "main", (Trial.id.in_(answered)) | (Trial.served_at >= cutoff))
            .group_by(Trial.item_id, Trial.pair)).all()
        load = {(item, pair): n for item, pair, n in load_rows}
        seen = {(t.item_id, t.pair) for t in history if t.kind == "main"}
        cap = self.config.max_votes_per_cell
        candidates = [c for c in self.catalog.cells if c not in seen and (cap is None or load.get(c, 0) < cap)]
        item_views = Counter(t.item_id for t in history)
        cell = schedule.choose_cell(candidates, load, item_views, participant.public_id)
        if cell is None:
            return None
        item_id, pair = cell
        first, second = pair.split("|")
        mains = [t for t in history if t.kind == "main"]
        outputs = self.catalog.outputs[item_id]
        by_id = self.catalog.by_id
        n_first_left = sum(by_id[t.left_output_id].method == t.pair.split("|")[0] for t in mains)
        on_left = schedule.first_on_left(participant.public_id, item_id, pair,
                                         n_first_left, len(mains) - n_first_left)
        left, right = (outputs[first], outputs[second]) if on_left else (outputs[second], outputs[first])
        return self._new_trial(participant, seq, "main", item_id, pair, left, right)

    def _attention_trial(self, participant: Participant, history: list[Trial], seq: int):
        shown = {(t.item_id, t.left_output_id, t.right_output_id) for t in history}
        used_items = Counter(t.item_id for t in history if t.kind == "attention")
        candidates = []
        for item_id, per in self.catalog.outputs.items():
            if BROKEN_METHOD not in per:
                continue
            for method, good in per.items():
                if method == BROKEN_METHOD:
                    continue
                key = (used_items[item_id], schedule.stable_hash("attention", participant.public_id, item_id, method))
                candidates.append((key, item_id, good, per[BROKEN_METHOD]))
        candidates.sort(key=lambda c: c[0])
        attention = [t for t in history if t.kind == "attention"]
        n_good_left = sum(t.expected == "left" for t in attention)
        for _, item_id, good, broken in candidates:
            good_left = schedule.first_on_left(participant.public_id, item_id, "attention",
                                               n_good_left, len(attention) - n_good_left)
            left, right = (good, broken) if good_left else (broken, good)
            if (item_id, left.id, right.id) in shown:
                continue
            return self._new_trial(participant, seq, "attention", item_id,
                                   schedule.pair_key(good.method, BROKEN_METHOD), left, right,
                                   expected="left" if good_left else "right")
        return None

    def _repeat_trial(self, participant: Participant, history: list[Trial], seq: int):
        repeated = {t.repeat_of for t in history if t.kind == "repeat"}
        for earlier in history:  # the earliest answered main trial not yet repeated
            if earlier.kind == "main" and earlier.id not in repeated:
                outputs = self.catalog.by_id
                return self._new_trial(participant, seq, "repeat", earlier.item_id, earlier.pair,
                                       outputs[earlier.right_output_id], outputs[earlier.left_output_id],
                                       repeat_of=earlier.id)
        return None

    # -- admin reports (never exposed without the admin token) -----------------------------
    def progress(self) -> pd.DataFrame:
        """Votes and pending holds per (item, method pair) cell of the main schedule."""
        with self.Session() as session:
            rows = session.execute(
                select(Trial.item_id, Trial.pair, func.count(Trial.id), func.count(Vote.id))
                .outerjoin(Vote, Vote.trial_id == Trial.id).where(Trial.kind == "main")
                .group_by(Trial.item_id, Trial.pair)).all()
        counts = {(i, p): (n, v) for i, p, n, v in rows}
        records = [{"item_id": i, "pair": p, "votes": counts.get((i, p), (0, 0))[1],
                    "pending": counts.get((i, p), (0, 0))[0] - counts.get((i, p), (0, 0))[1]}
                   for i, p in sorted(set(self.catalog.cells) | set(counts))]
        return pd.DataFrame.from_records(records, columns=["item_id", "pair", "votes", "pending"])

    def participants(self) -> pd.DataFrame:
        with self.Session() as session:
            rows = session.execute(
                select(Participant, func.count(Trial.id), func.count(Vote.id))
                .outerjoin(Trial, Trial.participant_id == Participant.id)
                .outerjoin(Vote, Vote.trial_id == Trial.id)
                .group_by(Participant.id).order_by(Participant.id)).all()
        records = [{"participant_id": p.pseudonym, "external_id": p.public_id, "id_source": p.id_source,
                    "created_at": iso(p.created_at), "consent_at": iso(p.consent_at),
                    "completed_at": iso(p.completed_at), "trials": n, "votes": v, "n_trials": p.n_trials}
                   for p, n, v in rows]
        return pd.DataFrame.from_records(records, columns=[
            "participant_id", "external_id", "id_source", "created_at", "consent_at", "completed_at",
            "trials", "votes", "n_trials"])

    def exclusions(self) -> pd.DataFrame:
        with self.Session() as session:
            quality = participant_quality(session, self.config)
        return pd.DataFrame.from_records([asdict(q) for q in quality], columns=[
            "participant", "votes", "attention_total", "attention_failed", "repeat_total",
            "repeat_inconsistent", "fast", "left_chosen", "excluded", "reason"])

    def close(self) -> None:
        self.engine.dispose()
