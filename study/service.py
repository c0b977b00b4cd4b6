"""StudyService: all server-side logic of the participant flow and the admin reports.

The Gradio tab, the JSON API and the in-process simulator are thin shells over this object,
so every path (browser, HTTP, simulation) runs the same code. The server decides the current
trial; a vote names its trial id and is stored at most once (``UNIQUE(votes.trial_id)``).
"""
from __future__ import annotations

import datetime as dt
import math
import re
import secrets
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pandas as pd
from sqlalchemy import and_, bindparam, func, insert, or_, select, text
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
from study.ratelimit import TokenBucket

PUBLIC_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")  # always with fullmatch: "$" admits a final "\n"
STIMULUS_NAME = re.compile(r"[0-9a-f]{16,64}\.png")
MAX_ID = 2**31 - 1  # ids are 32-bit on every backend (PostgreSQL INTEGER)
MAX_CLIENT_LATENCY_MS = 24 * 3600 * 1000
_PG_ASSIGN_LOCK = 0x5EED_57D1  # one advisory lock: trial assignment is serialised on PostgreSQL


class StudyError(ValueError):
    """A request the study refuses (unknown participant, someone else's trial, bad choice)."""


class RateLimited(StudyError):
    """Too many new participant ids from one client address in a short time."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
    identical: list[tuple[str, str]] = field(default_factory=list)  # cells never scheduled

    @property
    def methods(self) -> list[str]:
        return sorted({m for per in self.outputs.values() for m in per if m != BROKEN_METHOD})


Cell = tuple[str, str]  # (item_id, "method_a|method_b")
# The trial columns the schedule reads: fetched as plain rows, not ORM objects (once per request).
TRIAL_COLUMNS = (Trial.id, Trial.seq, Trial.kind, Trial.item_id, Trial.pair, Trial.left_output_id,
                 Trial.right_output_id, Trial.expected, Trial.repeat_of, Trial.served_at)
# The statements of every vote, built once: building a statement and its cache key costs more
# than running it (SQLAlchemy memoises the key on the statement object, not across new ones).
_NEWEST_IDS = select(select(func.max(Trial.id)).scalar_subquery(), select(func.max(Vote.id)).scalar_subquery())
_PARTICIPANT = select(Participant).where(Participant.public_id == bindparam("public_id"))
_PARTICIPANT_KNOWN = select(Participant.id).where(Participant.public_id == bindparam("public_id"))
_TRIAL = select(Trial.participant_id, Trial.kind, Trial.item_id, Trial.pair,
                Trial.served_at).where(Trial.id == bindparam("trial_id"))
_HISTORY = (select(*TRIAL_COLUMNS, Vote.id.label("vote_id")).outerjoin(Vote, Vote.trial_id == Trial.id)
            .where(Trial.participant_id == bindparam("participant_id")).order_by(Trial.seq))
_INSERT_TRIAL = insert(Trial.__table__).returning(Trial.id)


@dataclass
class CellLoad:
    """This process's copy of what the schedule counts per cell: main votes, and served but
    unanswered main trials (holds while recent). Kept up to date by this process's own writes
    and checked at the start of every write transaction against the newest trial and vote ids
    (trials and votes are only inserted, under the write lock): a write by another process makes
    it stale and it is rebuilt from the database. Replaces two full-table aggregates per vote."""

    votes: Counter = field(default_factory=Counter)
    pending: dict[int, tuple[Cell, int, dt.datetime]] = field(default_factory=dict)  # id -> cell, seq, served
    max_trial: int = 0
    max_vote: int = 0

    def holds(self, now: dt.datetime, first_s: float, later_s: float) -> Counter:
        first, later = now - dt.timedelta(seconds=first_s), now - dt.timedelta(seconds=later_s)
        oldest = min(first, later)
        held: Counter = Counter()
        for trial_id, (cell, seq, served_at) in list(self.pending.items()):
            if served_at < oldest:  # expired for good: served_at only gets older
                del self.pending[trial_id]
            elif served_at >= (first if seq == 1 else later):
                held[cell] += 1
        return held


class StudyService:
    def __init__(self, db_url: str | Path, stimuli_dir: str | Path, config: StudyConfig | None = None):
        self.engine = make_engine(db_url)
        init_db(self.engine)
        self.Session = session_factory(self.engine)  # writes (SQLite: BEGIN IMMEDIATE)
        self.ReadSession = session_factory(self.engine.execution_options(sqlite_begin="DEFERRED"))
        self._write_lock = threading.Lock()  # one writer per process: no busy-waiting in SQLite
        self._pg = self.engine.dialect.name == "postgresql"
        self.stimuli_dir = Path(stimuli_dir).resolve()
        self.config = self._record_config(config)
        # The key Gradio's BrowserState encrypts the participant's own id with in their browser.
        # Gradio sends it to every visitor, so it is public by design and protects nothing else;
        # completion codes are random and stored, never derived from it.
        self.browser_key = self._setting("browser_state_key", lambda: secrets.token_hex(16))
        self.join_limiter = TokenBucket(self.config.new_participants_burst,
                                        self.config.new_participants_per_minute)
        self.catalog = self.load_catalog()
        self._zoom_dir: Path | None = None
        self._load: CellLoad | None = None  # see CellLoad; None: rebuild on next use
        self._load_dirty = False  # changed in the open write transaction (dropped on rollback)

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
        """Items, outputs and schedulable cells. Outputs of one item with identical pixels
        (``params_json["pixels_sha256"]``, else identical files) are never paired."""
        catalog = Catalog()
        with self.ReadSession() as session:
            for item in session.scalars(select(Item)):
                catalog.items[item.id] = item
            for out in session.scalars(select(Output).where(Output.failed.is_(False), Output.path.is_not(None))):
                if (self.stimuli_dir / out.path).is_file():
                    catalog.outputs.setdefault(out.item_id, {})[out.method] = out
                    catalog.by_id[out.id] = out
        for item_id in sorted(catalog.outputs):
            per = catalog.outputs[item_id]
            methods = [m for m in per if m != BROKEN_METHOD]
            for a, b in schedule.method_pairs(methods):
                cell = (item_id, schedule.pair_key(a, b))
                if _pixels(per[a]) == _pixels(per[b]):
                    catalog.identical.append(cell)
                else:
                    catalog.cells.append(cell)
        self.catalog = catalog
        return catalog

    @property
    def allowed_paths(self) -> list[str]:
        """The exact files the participant flow shows (sources, outputs, rubric images): Gradio
        serves nothing else from the stimuli folder, whatever else is put there."""
        names = {item.source_path for item in self.catalog.items.values()}
        names |= {out.path for out in self.catalog.by_id.values()}
        paths = [str(self.stimuli_dir / name) for name in sorted(names)]
        return paths + [path for path, _ in self.rubric_examples()]

    def stimulus_path(self, name: str) -> Path:
        """Full path of a served stimulus: only the catalog's content-hash PNG names."""
        if not STIMULUS_NAME.fullmatch(name) or name not in self._served_names:
            raise StudyError("no such stimulus")
        path = self.stimuli_dir / name
        if not path.is_file():
            raise StudyError("no such stimulus")
        return path

    @property
    def _served_names(self) -> set[str]:
        catalog = self.catalog
        if getattr(self, "_names_for", None) is not catalog:
            self._names = ({i.source_path for i in catalog.items.values()}
                           | {o.path for o in catalog.by_id.values()})
            self._names_for = catalog
        return self._names

    def rubric_examples(self) -> list[tuple[str, str]]:
        """(path, caption) pairs of the hallucination rubric illustrations written by prepare."""
        from study.stimuli import RUBRIC_EXAMPLES

        out = []
        for name, caption in RUBRIC_EXAMPLES:
            path = self.stimuli_dir / "rubric" / f"{name}.png"
            if path.is_file():
                out.append((str(path), caption))
        return out

    @property
    def zoom_dir(self) -> Path:
        """Where the fixed-size zoom crops are written (a private temporary folder)."""
        if self._zoom_dir is None:
            import tempfile

            self._zoom_dir = Path(tempfile.mkdtemp(prefix="study-zoom-"))
        return self._zoom_dir

    # -- transactions --------------------------------------------------------------------
    @contextmanager
    def _write(self):
        """A write transaction, serialised: in process by a lock (so SQLite never busy-waits
        between this server's own threads), across processes by SQLite's write lock (BEGIN
        IMMEDIATE) or a PostgreSQL advisory lock, so trial assignment sees every hold."""
        with self._write_lock:
            self._load_dirty = False
            try:
                with self.Session.begin() as session:
                    if self._pg:
                        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ASSIGN_LOCK})
                    self._check_load(session)
                    yield session
            except BaseException:
                if self._load_dirty:  # it counts writes that were rolled back
                    self._load = None
                raise

    def _check_load(self, session: Session) -> None:
        """Drop the cell-load copy when another process wrote trials or votes since (the newest
        ids differ from the ones this process wrote last). Called before the transaction writes."""
        if self._load is None:
            return
        newest = session.execute(_NEWEST_IDS).one()
        if (newest[0] or 0, newest[1] or 0) != (self._load.max_trial, self._load.max_vote):
            self._load = None

    def _cell_load(self, session: Session) -> CellLoad:
        """The cell-load copy, rebuilt from the database (in this write transaction) when missing."""
        if self._load is None:
            load = CellLoad(votes=Counter(self._cell_votes(session)))
            oldest = utcnow() - dt.timedelta(seconds=max(self.config.consent_hold_s, self.config.hold_timeout_s))
            for trial_id, item_id, pair, seq, served_at in session.execute(
                    select(Trial.id, Trial.item_id, Trial.pair, Trial.seq, Trial.served_at)
                    .outerjoin(Vote, Vote.trial_id == Trial.id)
                    .where(Trial.kind == "main", Vote.id.is_(None), Trial.served_at >= oldest)):
                load.pending[trial_id] = ((item_id, pair), seq, served_at)
            newest = session.execute(_NEWEST_IDS).one()
            load.max_trial, load.max_vote = newest[0] or 0, newest[1] or 0
            self._load, self._load_dirty = load, True
        return self._load

    # -- participant flow ----------------------------------------------------------------
    def join(self, public_id: str | None = None, client: str | None = None) -> str:
        """Register (or find) a participant; a URL id such as a Prolific PID, else a new token.
        ``client`` (the request's address) is rate limited in how many new ids it may create."""
        source = "url"
        if not public_id:
            public_id, source = secrets.token_urlsafe(12), "token"
        if not isinstance(public_id, str) or not PUBLIC_ID.fullmatch(public_id):
            raise StudyError("participant id must be 1-128 letters, digits, '-', '_' or '.'")
        with self.ReadSession() as session:
            if session.scalar(_PARTICIPANT_KNOWN, {"public_id": public_id}) is not None:
                return public_id
        if client is not None and not self.join_limiter.allow(client):
            wait = self.join_limiter.retry_after(client)
            raise RateLimited(f"too many new participants from this address; retry in {math.ceil(wait)} s",
                              wait)
        with self._write() as session:
            insert_ignore(session, Participant, {
                "public_id": public_id, "id_source": source, "created_at": utcnow(),
                "n_trials": self.config.trials_per_participant})
        return public_id

    def consent(self, public_id: str) -> TrialView:
        """Record consent and fix the participant's number of trials to what the schedule can
        still give them (so the counter never promises trials that do not exist)."""
        with self._write() as session:
            participant = self._participant(session, public_id)
            if participant.consent_at is None:
                participant.consent_at = utcnow()
                participant.n_trials = self._feasible_trials(session, participant)
            return self._current(session, participant)

    def current(self, public_id: str) -> TrialView:
        """The participant's current screen; assigns the next trial when none is pending."""
        with self.ReadSession() as session:
            view = self._current(session, self._participant(session, public_id), assign=False)
        if view is not None:
            return view
        with self._write() as session:
            return self._current(session, self._participant(session, public_id))

    def vote(self, public_id: str, trial_id: int, choice: str, halluc_left: bool = False,
             halluc_right: bool = False, client: str = "api",
             client_latency_ms: int | None = None) -> VoteResult:
        """Store the vote for ``trial_id`` once (a repeated submission is acknowledged as a
        duplicate) and assign the next trial, in one transaction. ``client_latency_ms`` is the
        response time measured by the participant's client (trial on screen -> click)."""
        if choice not in CHOICES:
            raise StudyError(f"choice must be one of {', '.join(CHOICES)}")
        if isinstance(trial_id, bool) or not isinstance(trial_id, int) or not 1 <= trial_id <= MAX_ID:
            raise StudyError("this trial does not belong to this participant")
        if client_latency_ms is not None and (isinstance(client_latency_ms, bool) or not isinstance(
                client_latency_ms, int) or not 0 <= client_latency_ms <= MAX_CLIENT_LATENCY_MS):
            raise StudyError(f"client_latency_ms must be an integer in 0..{MAX_CLIENT_LATENCY_MS}")
        with self._write() as session:
            participant = self._participant(session, public_id)
            trial = session.execute(_TRIAL, {"trial_id": trial_id}).first()
            if trial is None or trial.participant_id != participant.id:
                raise StudyError("this trial does not belong to this participant")
            answered_at = utcnow()
            latency_ms = max(0, int((answered_at - trial.served_at).total_seconds() * 1000))
            response_ms = client_latency_ms if client_latency_ms is not None else latency_ms
            vote_id = insert_ignore(session, Vote, {
                "trial_id": trial_id, "choice": choice, "halluc_left": bool(halluc_left),
                "halluc_right": bool(halluc_right), "answered_at": answered_at,
                "latency_ms": latency_ms, "client_latency_ms": client_latency_ms,
                "fast": bool(self.config.rule.is_fast(response_ms)), "client": client})
            if vote_id is not None and self._load is not None:
                self._load_dirty = True
                self._load.max_vote = vote_id
                self._load.pending.pop(trial_id, None)
                if trial.kind == "main":
                    self._load.votes[(trial.item_id, trial.pair)] += 1
            view = self._current(session, participant)
        return VoteResult("recorded" if vote_id is not None else "duplicate", view)

    # -- internals -----------------------------------------------------------------------
    def _participant(self, session: Session, public_id: str) -> Participant:
        if not isinstance(public_id, str) or not PUBLIC_ID.fullmatch(public_id):
            raise StudyError("unknown participant")
        participant = session.scalars(_PARTICIPANT, {"public_id": public_id}).first()
        if participant is None:
            raise StudyError("unknown participant")
        return participant

    def issue_completion_code(self) -> str:
        """A fixed study code when configured, else a fresh random code (stored with the
        participant; nothing a participant can see lets them derive another one)."""
        if self.config.completion_code:
            return self.config.completion_code
        return secrets.token_hex(5).upper()

    def check_plan(self, n_trials: int) -> dict[int, str]:
        c = self.config
        return schedule.check_plan(n_trials, c.min_attention_checks, c.attention_share, c.repeat_share)

    def _feasible_trials(self, session: Session, participant: Participant) -> int:
        """The most trials (<= the configured number) whose main trials fit in the cells that
        still have room for votes (pending holds do not count: they may expire)."""
        cap = self.config.max_votes_per_cell
        if cap is None:
            room = len(self.catalog.cells)
        else:
            votes = self._cell_load(session).votes
            room = sum(votes.get(cell, 0) < cap for cell in self.catalog.cells)
        for n in range(participant.n_trials, 0, -1):
            if n - len(self.check_plan(n)) <= room:
                return n
        return 0

    def _current(self, session: Session, participant: Participant, assign: bool = True) -> TrialView | None:
        """The participant's screen; with ``assign=False`` None when a new trial must be assigned."""
        if participant.consent_at is None:
            return TrialView("consent", participant.public_id, n=participant.n_trials)
        history = session.execute(_HISTORY, {"participant_id": participant.id}).all()
        pending = next((t for t in history if t.vote_id is None), None)
        if pending is not None:
            return self._view(participant, pending)
        if participant.completed_at is not None:
            return self._done(participant, len(history))
        if participant.n_trials == 0 and not history:
            return TrialView("no_work", participant.public_id)
        if not assign:
            return None
        trials = list(history)
        trial = None
        if len(trials) < participant.n_trials:
            trial = self._assign(session, participant, trials, len(trials) + 1)
        if trial is None:
            if not trials:
                return TrialView("no_work", participant.public_id)
            participant.completed_at = utcnow()
            participant.completion_code = self.issue_completion_code()
            return self._done(participant, len(trials))
        trial.id = session.execute(_INSERT_TRIAL, vars(trial)).scalar_one()
        load = self._load
        if load is not None:
            self._load_dirty = True
            load.max_trial = trial.id
            if trial.kind == "main":
                load.pending[trial.id] = ((trial.item_id, trial.pair), trial.seq, trial.served_at)
        return self._view(participant, trial)

    def _done(self, participant: Participant, answered: int) -> TrialView:
        return TrialView("done", participant.public_id, k=answered, n=participant.n_trials,
                         completion_code=participant.completion_code or "")

    def _view(self, participant: Participant, trial: Trial) -> TrialView:
        item = self.catalog.items[trial.item_id]
        by_id = self.catalog.by_id
        return TrialView("trial", participant.public_id, trial_id=trial.id, k=trial.seq,
                         n=participant.n_trials, instruction=item.instruction, source=item.source_path,
                         left=by_id[trial.left_output_id].path, right=by_id[trial.right_output_id].path)

    def _assign(self, session: Session, participant: Participant, history: list[Trial], seq: int) -> Trial | None:
        kind = schedule.trial_kind(seq, self.check_plan(participant.n_trials))
        trial = None
        if kind == "repeat":
            trial = self._repeat_trial(participant, history, seq)
        elif kind == "attention":
            trial = self._attention_trial(participant, history, seq)
        if trial is None:
            trial = self._main_trial(session, participant, history, seq)
        return trial

    def _new_trial(self, participant: Participant, seq: int, kind: str, item_id: str, pair: str,
                   left: Output, right: Output, **extra) -> SimpleNamespace:
        """The new trial's column values (inserted by ``_current`` with a Core insert)."""
        values = dict(participant_id=participant.id, seq=seq, kind=kind, item_id=item_id, pair=pair,
                      left_output_id=left.id, right_output_id=right.id, served_at=utcnow(),
                      expected=None, repeat_of=None)
        values.update(extra)
        return SimpleNamespace(**values)

    def _cell_votes(self, session: Session) -> dict[tuple[str, str], int]:
        rows = session.execute(
            select(Trial.item_id, Trial.pair, func.count(Vote.id)).join(Vote, Vote.trial_id == Trial.id)
            .where(Trial.kind == "main").group_by(Trial.item_id, Trial.pair)).all()
        return {(item, pair): n for item, pair, n in rows}

    def _cell_holds(self, session: Session) -> dict[tuple[str, str], int]:
        """Served, unanswered main trials still holding their cell: a participant's first trial
        (given at consent, before they have shown they are real) for ``consent_hold_s``, later
        ones for ``hold_timeout_s``."""
        now = utcnow()
        first = now - dt.timedelta(seconds=self.config.consent_hold_s)
        later = now - dt.timedelta(seconds=self.config.hold_timeout_s)
        rows = session.execute(
            select(Trial.item_id, Trial.pair, func.count(Trial.id))
            .outerjoin(Vote, Vote.trial_id == Trial.id)
            .where(Trial.kind == "main", Vote.id.is_(None),
                   or_(and_(Trial.seq == 1, Trial.served_at >= first),
                       and_(Trial.seq > 1, Trial.served_at >= later)))
            .group_by(Trial.item_id, Trial.pair)).all()
        return {(item, pair): n for item, pair, n in rows}

    def _main_trial(self, session: Session, participant: Participant, history: list[Trial], seq: int):
        cell_load = self._cell_load(session)
        votes = cell_load.votes
        holds = cell_load.holds(utcnow(), self.config.consent_hold_s, self.config.hold_timeout_s)
        load = {cell: votes.get(cell, 0) + holds.get(cell, 0) for cell in set(votes) | set(holds)}
        seen = {(t.item_id, t.pair) for t in history if t.kind == "main"}
        cap = self.config.max_votes_per_cell
        unseen = [c for c in self.catalog.cells if c not in seen]
        candidates = [c for c in unseen if cap is None or load.get(c, 0) < cap]
        if not candidates and cap is not None:
            # Every cell with room is only held, not voted: holds must not lock anyone out.
            candidates = [c for c in unseen if votes.get(c, 0) < cap]
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
        path = {o.id: o.path for o in self.catalog.by_id.values()}
        shown = {(path[t.left_output_id], path[t.right_output_id]) for t in history}
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
            if (left.path, right.path) in shown:  # the same files (identical outputs) count as shown
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
        with self.ReadSession() as session:
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
        with self.ReadSession() as session:
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
        with self.ReadSession() as session:
            quality = participant_quality(session, self.config)
        return pd.DataFrame.from_records([asdict(q) for q in quality], columns=[
            "participant", "votes", "attention_total", "attention_failed", "repeat_total",
            "repeat_inconsistent", "fast", "left_chosen", "excluded", "reason"])

    def identical_pairs(self) -> pd.DataFrame:
        """(item, method pair) cells left out of the schedule because both outputs are identical."""
        return pd.DataFrame.from_records(self.catalog.identical, columns=["item_id", "pair"])

    def close(self) -> None:
        self.engine.dispose()
        if self._zoom_dir is not None:
            import shutil

            shutil.rmtree(self._zoom_dir, ignore_errors=True)


def _pixels(output: Output) -> str:
    return (output.params_json or {}).get("pixels_sha256") or output.sha256 or output.path
