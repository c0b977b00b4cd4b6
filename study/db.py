"""Study database: SQLAlchemy 2 ORM schema, engine setup, and the canonical votes table.

One schema serves SQLite (default, a file with WAL) and PostgreSQL. The integrity rules of
the study live here as constraints, not in analysis-time filters (reference notes A.9.3):
a trial holds at most one vote (``UNIQUE(votes.trial_id)``), a participant has one trial per
position (``UNIQUE(trials.participant_id, seq)``) and never the same shown pair twice.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column, sessionmaker

CHOICES = ("left", "right", "both_good", "both_bad")
TRIAL_KINDS = ("main", "attention", "repeat")
BROKEN_METHOD = "broken"

VOTE_COLUMNS = [
    "participant_id", "item_id", "method_left", "method_right", "choice", "halluc_left",
    "halluc_right", "trial_kind", "served_at", "answered_at", "expected_choice", "latency_ms",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Optional[dt.datetime], dialect) -> Optional[dt.datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[dt.datetime], dialect) -> Optional[dt.datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Participant(Base):
    __tablename__ = "participants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(128), unique=True)  # URL pid or generated token
    id_source: Mapped[str] = mapped_column(String(16))  # url | token
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    consent_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    completion_code: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    n_trials: Mapped[int] = mapped_column(Integer)

    @property
    def pseudonym(self) -> str:
        return f"p{self.id:04d}"


class Item(Base):
    __tablename__ = "items"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_path: Mapped[str] = mapped_column(String(256))  # file name inside the stimuli directory
    instruction: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)


class Output(Base):
    """One rendered stimulus with its provenance; ``path`` is a content-hash file name."""

    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("item_id", "method", name="uq_output_item_method"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"))
    method: Mapped[str] = mapped_column(String(64))
    path: Mapped[Optional[str]] = mapped_column(String(256), nullable=True)
    sha256: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    width: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    height: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    size: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    params_json: Mapped[dict] = mapped_column(JSON)  # renderer report: timings, parameters, seed ...
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_reason: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Trial(Base):
    """A pair shown to a participant; the sides actually shown are recorded (A.9.2)."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("participant_id", "seq", name="uq_trial_participant_seq"),
        UniqueConstraint("participant_id", "item_id", "left_output_id", "right_output_id",
                         name="uq_trial_participant_pair"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1-based position in the participant's schedule
    kind: Mapped[str] = mapped_column(String(16))  # main | attention | repeat
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"))
    pair: Mapped[str] = mapped_column(String(160), index=True)  # "method_a|method_b", sorted
    left_output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"))
    right_output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"))
    expected: Mapped[Optional[str]] = mapped_column(String(8), nullable=True)  # attention: good side
    repeat_of: Mapped[Optional[int]] = mapped_column(ForeignKey("trials.id"), nullable=True)
    served_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Vote(Base):
    __tablename__ = "votes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), unique=True)
    choice: Mapped[str] = mapped_column(String(16))
    halluc_left: Mapped[bool] = mapped_column(Boolean)
    halluc_right: Mapped[bool] = mapped_column(Boolean)
    answered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    latency_ms: Mapped[int] = mapped_column(Integer)  # server clock: served_at -> answered_at
    fast: Mapped[bool] = mapped_column(Boolean)  # by the response time below (else latency_ms)
    client: Mapped[str] = mapped_column(String(16))  # gradio | api | inprocess
    # measured by the participant's client: trial on screen -> click (None: client sent none)
    client_latency_ms: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)

    @property
    def response_ms(self) -> int:
        """The response time the exclusion rule uses: the client's, else the server's."""
        return self.client_latency_ms if self.client_latency_ms is not None else self.latency_ms


class StudyConfigRecord(Base):
    """Every configuration (incl. the exclusion rule) the server ran with, append-only."""

    __tablename__ = "study_config"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    config_json: Mapped[dict] = mapped_column(JSON)
    exclusion_rule: Mapped[str] = mapped_column(Text)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def normalize_url(url: str | Path) -> str:
    """An SQLAlchemy URL as is; anything else is taken as a SQLite file path."""
    text = str(url)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: a read-then-write transaction
    # takes the write lock up front instead of failing its upgrade under WAL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn) -> None:
    # Writes take the write lock up front; read-only sessions pass
    # ``execution_options(sqlite_begin="DEFERRED")`` and read a WAL snapshot without it.
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql("BEGIN DEFERRED" if mode == "DEFERRED" else "BEGIN IMMEDIATE")


def make_engine(url: str | Path) -> Engine:
    """Engine for a URL or SQLite path; SQLite gets WAL and a busy timeout on every connection."""
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, pool_size=8, max_overflow=16, pool_timeout=60,
                               connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = create_engine(url, pool_size=8, max_overflow=16, pool_timeout=60,
                               pool_pre_ping=True)
    return engine


ADDED_COLUMNS = {"votes": {"client_latency_ms": "INTEGER"}}  # columns newer than the first schema


def init_db(engine: Engine) -> None:
    """Create the tables; add columns that databases made by an earlier version lack."""
    Base.metadata.create_all(engine)
    inspector = inspect(engine)
    for table, columns in ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for name, sql_type in columns.items():
            if name not in present:
                try:
                    with engine.begin() as conn:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
                except (OperationalError, ProgrammingError):  # a concurrent process added it
                    pass


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def insert_ignore(session: Session, model: type[Base], values: dict[str, Any]) -> Optional[Any]:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the dialect's own syntax; the new row's primary
    key, or None when a row with the same unique key exists. A Core insert on the table (not the
    ORM's bulk path): it runs once per vote, and the ORM layer costs more than the statement."""
    backend = session.get_bind().dialect.name
    key = model.__mapper__.primary_key[0]
    if backend == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif backend == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # other backends: plain insert, conflicts surface as IntegrityError
        try:
            with session.begin_nested():
                row = model(**values)
                session.add(row)
            return getattr(row, key.key)
        except IntegrityError:
            return None
    statement = _INSERT_IGNORE.get((backend, model))
    if statement is None:  # built once per table: statement construction dominates its cost
        statement = _INSERT_IGNORE[(backend, model)] = (
            insert(model.__table__).on_conflict_do_nothing().returning(key))
    return session.execute(statement, values).scalar()


_INSERT_IGNORE: dict[tuple[str, type], Any] = {}


def iso(value: Optional[dt.datetime]) -> str:
    if value is None:
        return ""
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def latest_config(session: Session) -> Optional[StudyConfigRecord]:
    return session.scalars(select(StudyConfigRecord).order_by(StudyConfigRecord.id.desc()).limit(1)).first()


def votes_frame(url: str | Path) -> pd.DataFrame:
    """The canonical votes table: one row per vote (see ``VOTE_COLUMNS``) plus provenance
    and quality flags (``fast_flag``, ``excluded``, ``exclusion_reason``); nothing is dropped.

    ``latency_ms`` is the response time the exclusion rule uses: measured by the participant's
    client when it reported one (``latency_source=client``), else the server's served -> answered
    time (``server``), which is also given as ``server_latency_ms``. ``excluded`` is the recorded
    rule (``study.exclusion``) applied to this table, exactly as the analysis applies it."""
    from study.config import StudyConfig
    from study.exclusion import participant_verdicts

    engine = make_engine(url)
    try:
        init_db(engine)
        left, right = aliased(Output), aliased(Output)
        query = (
            select(Vote, Trial, Participant, left.method, right.method, left.path, right.path)
            .join(Trial, Vote.trial_id == Trial.id)
            .join(Participant, Trial.participant_id == Participant.id)
            .join(left, Trial.left_output_id == left.id)
            .join(right, Trial.right_output_id == right.id)
            .order_by(Participant.id, Trial.seq)
        )
        with Session(engine.execution_options(sqlite_begin="DEFERRED")) as session:
            rows = session.execute(query).all()
            config = latest_config(session)
        rule = StudyConfig.from_dict(config.config_json if config else None).rule
        records = []
        for vote, trial, participant, m_left, m_right, p_left, p_right in rows:
            records.append({
                "participant_id": participant.pseudonym,
                "item_id": trial.item_id,
                "method_left": m_left,
                "method_right": m_right,
                "choice": vote.choice,
                "halluc_left": int(vote.halluc_left),
                "halluc_right": int(vote.halluc_right),
                "trial_kind": trial.kind,
                "served_at": iso(trial.served_at),
                "answered_at": iso(vote.answered_at),
                "expected_choice": trial.expected or "",
                "latency_ms": int(vote.response_ms),
                "trial_id": trial.id,
                "seq": trial.seq,
                "repeat_of": trial.repeat_of if trial.repeat_of is not None else "",
                "output_left": p_left,
                "output_right": p_right,
                "fast_flag": int(vote.fast),
                "excluded": 0,
                "exclusion_reason": "",
                "client": vote.client,
                "server_latency_ms": int(vote.latency_ms),
                "latency_source": "client" if vote.client_latency_ms is not None else "server",
            })
        columns = VOTE_COLUMNS + ["trial_id", "seq", "repeat_of", "output_left", "output_right",
                                  "fast_flag", "excluded", "exclusion_reason", "client",
                                  "server_latency_ms", "latency_source"]
        frame = pd.DataFrame.from_records(records, columns=columns)
        if len(frame):
            verdicts = participant_verdicts(frame, rule).set_index("participant_id")
            frame["excluded"] = frame["participant_id"].map(verdicts["excluded"]).astype(int)
            frame["exclusion_reason"] = frame["participant_id"].map(verdicts["reason"])
        return frame
    finally:
        engine.dispose()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def stored_votes(db: str, trial_ids: list[int]) -> int:
    """How many of `trial_ids` have a stored vote (the fault tests' "0 lost votes" check)."""
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            ids = sorted(set(trial_ids))
            total = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                total += conn.execute(select(func.count(Vote.id)).where(Vote.trial_id.in_(chunk))).scalar_one()
            return total
    finally:
        engine.dispose()
