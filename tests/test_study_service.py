"""Schedule, counterbalancing, one-vote-per-trial, resume, exclusions, export (SQLite and PostgreSQL)."""
from __future__ import annotations

import threading
from collections import Counter

import pandas as pd
import pytest
from sqlalchemy import func, select

from study import schedule
from study.config import StudyConfig
from study.db import VOTE_COLUMNS, Output, Trial, Vote, votes_frame
from study.service import StudyError, StudyService
from study.simulate import InProcessTransport, oracle_from_db, parse_rates, parse_truth, simulate
from test_study_support import db_url, prepare_study  # noqa: F401  (fixture)


@pytest.fixture
def study(db_url, tmp_path):
    stimuli = prepare_study(db_url, tmp_path / "stimuli")
    service = StudyService(db_url, stimuli, StudyConfig(trials_per_participant=24, fast_threshold_s=0.0,
                                                       new_participants_burst=0))
    yield service
    service.close()


def answer_all(service: StudyService, pid: str, choice="left", limit=None) -> int:
    service.join(pid)
    view = service.consent(pid)
    n = 0
    while view.status == "trial" and (limit is None or n < limit):
        view = service.vote(pid, view.trial_id, choice).next
        n += 1
    return n


def test_trial_kinds_and_sides_are_pure_functions():
    plan = schedule.check_plan(40, 5, 0.1, 0.05)
    kinds = [schedule.trial_kind(s, plan) for s in range(1, 41)]
    assert [i + 1 for i, k in enumerate(kinds) if k != "main"] == [3, 9, 15, 21, 26, 32, 38]
    assert Counter(kinds) == {"main": 33, "attention": 5, "repeat": 2} and kinds[2] == "attention"
    assert schedule.stable_hash("p", "item", "a|b") == schedule.stable_hash("p", "item", "a|b")
    assert len(schedule.method_pairs(["a", "b", "c", "d"])) == 6
    left = right = 0
    for i in range(101):
        if schedule.first_on_left("p1", f"item{i}", "a|b", left, right):
            left += 1
        else:
            right += 1
        assert abs(left - right) <= 1


def test_schedule_is_balanced_and_counterbalanced(study):
    for i in range(12):
        answer_all(study, f"bal{i:02d}")
    with study.Session() as session:
        trials = session.scalars(select(Trial)).all()
        method = {o.id: o.method for o in session.scalars(select(Output))}
    mains = [t for t in trials if t.kind == "main"]
    per_cell = Counter((t.item_id, t.pair) for t in mains)
    assert len(study.catalog.cells) == 36
    counts = [per_cell.get(c, 0) for c in study.catalog.cells]
    assert max(counts) - min(counts) <= 1, counts
    by_participant: dict[int, list[Trial]] = {}
    for t in trials:
        by_participant.setdefault(t.participant_id, []).append(t)
    for own in by_participant.values():
        assert len(own) == 24
        own_mains = [t for t in own if t.kind == "main"]
        assert len({(t.item_id, t.pair) for t in own_mains}) == len(own_mains)  # a pair once per item
        first_left = sum(method[t.left_output_id] == t.pair.split("|")[0] for t in own_mains)
        assert abs(2 * first_left - len(own_mains)) <= 1  # 50/50 sides per participant
        assert Counter(t.kind for t in own) == {"main": 18, "attention": 5, "repeat": 1}
        for t in own:
            if t.kind == "attention":
                good = t.left_output_id if t.expected == "left" else t.right_output_id
                bad = t.right_output_id if t.expected == "left" else t.left_output_id
                assert method[bad] == "broken" and method[good] != "broken"
            if t.kind == "repeat":
                earlier = next(e for e in own if e.id == t.repeat_of)
                assert (t.left_output_id, t.right_output_id) == (earlier.right_output_id, earlier.left_output_id)


def test_concurrent_double_submission_stores_one_vote(study):
    pid = study.join("double")
    view = study.consent(pid)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def submit():
        try:
            barrier.wait()
            results.append(study.vote(pid, view.trial_id, "right", True, False).status)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == ["duplicate"] * 7 + ["recorded"]
    with study.Session() as session:
        assert session.scalar(select(func.count(Vote.id)).where(Vote.trial_id == view.trial_id)) == 1
        assert session.scalar(select(func.count(Trial.id))) == 2  # the voted trial and the next one


def test_two_tabs_get_the_same_trial(study):
    pid = study.join("twotabs")
    study.consent(pid)
    answer_all(study, pid, limit=1)
    barrier = threading.Barrier(6)
    seen = []

    def open_tab():
        barrier.wait()
        seen.append(study.current(pid).trial_id)

    threads = [threading.Thread(target=open_tab) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1


def test_resume_after_reload_and_restart(study, db_url):
    pid = study.join("PROLIFIC_123")
    first = study.consent(pid)
    assert first.status == "trial" and first.k == 1
    assert study.current(pid).trial_id == first.trial_id  # reload: same trial
    second = study.vote(pid, first.trial_id, "left").next
    assert second.k == 2
    restarted = StudyService(db_url, study.stimuli_dir)
    try:
        again = restarted.current(restarted.join("PROLIFIC_123"))
        assert (again.trial_id, again.k, again.left, again.right) == (second.trial_id, 2, second.left, second.right)
        assert restarted.config == study.config  # the recorded configuration is reused
    finally:
        restarted.close()


def test_votes_only_on_own_trials_and_valid_choices(study):
    a = study.consent(study.join("alice"))
    study.consent(study.join("bob"))
    with pytest.raises(StudyError):
        study.vote("bob", a.trial_id, "left")
    with pytest.raises(StudyError):
        study.vote("alice", a.trial_id, "A")
    with pytest.raises(StudyError):
        study.current("nobody")
    with pytest.raises(StudyError):
        study.join("bad id with spaces")


def test_completion_code_and_no_work_left(db_url, tmp_path):
    stimuli = prepare_study(db_url, tmp_path / "stimuli")
    config = StudyConfig(trials_per_participant=30, max_votes_per_cell=1, min_attention_checks=0,
                         attention_share=0, repeat_share=0)
    service = StudyService(db_url, stimuli, config)
    try:
        assert answer_all(service, "first") == 30
        done = service.current("first")
        assert done.status == "done" and len(done.completion_code) == 10
        assert answer_all(service, "second") == 6  # the 6 cells left, then done early
        assert service.current("second").status == "done"
        assert service.consent(service.join("late")).status == "no_work"
    finally:
        service.close()


def test_simulation_export_and_exclusions(study, db_url, tmp_path):
    oracle = oracle_from_db(db_url)
    report = simulate(InProcessTransport(study), oracle, participants=6,
                      truth=parse_truth(["mobilepicasso>ip2p-direct:0.9"]),
                      halluc=parse_rates(["ip2p-direct:0.5"], 0.05), careless=0.0, seed=1)
    assert not report.errors and report.acknowledged == 6 * 24 and report.completed == 6
    answer_all(study, "careless", choice="both_bad")  # fails every attention check
    frame = votes_frame(db_url)
    assert list(frame.columns[: len(VOTE_COLUMNS)]) == VOTE_COLUMNS
    assert len(frame) == 7 * 24 and frame.trial_id.is_unique
    assert set(frame.choice) <= {"left", "right", "both_good", "both_bad"}
    attention = frame[frame.trial_kind == "attention"]
    assert set(attention.expected_choice) <= {"left", "right"}
    assert (frame[frame.trial_kind != "attention"].expected_choice == "").all()
    assert pd.to_datetime(frame.answered_at, utc=True).notna().all()
    careless = frame[frame.participant_id == frame.participant_id.iloc[-1]]
    assert careless.excluded.all() and "attention" in careless.exclusion_reason.iloc[0]
    assert not frame[frame.participant_id != careless.participant_id.iloc[0]].excluded.any()
    main = frame[(frame.trial_kind == "main") & (frame.excluded == 0) & frame.choice.isin(["left", "right"])]
    pair = main[main.method_left.isin(["mobilepicasso", "ip2p-direct"])
                & main.method_right.isin(["mobilepicasso", "ip2p-direct"])]
    wins = ((pair.choice == "left") & (pair.method_left == "mobilepicasso")) | \
           ((pair.choice == "right") & (pair.method_right == "mobilepicasso"))
    assert wins.mean() > 0.65
    assert "attention" in study.exclusions().reason.str.cat()


def _db_loads(service: StudyService) -> tuple[dict, dict]:
    with service.ReadSession() as session:
        return service._cell_votes(session), service._cell_holds(session)


def test_cell_load_copy_matches_the_database_across_processes(db_url, tmp_path):
    """Two services on one database stand for two server processes: each keeps its own copy of
    the per-cell votes and holds, and a write by the other makes it rebuild, so the copies used
    for assignment always equal the database's aggregates (and a least-loaded cell is chosen)."""
    stimuli = prepare_study(db_url, tmp_path / "stimuli")
    config = StudyConfig(trials_per_participant=12, fast_threshold_s=0.0, new_participants_burst=0)
    one, two = StudyService(db_url, stimuli, config), StudyService(db_url, stimuli, config)
    try:
        views = {}
        for i, service in enumerate([one, two] * 3):
            pid = service.join(f"proc{i}")
            views[pid] = (service, service.consent(pid))
        for _ in range(8):
            for pid, (service, view) in list(views.items()):
                if view.status == "trial":
                    other = two if service is one else one  # alternate the process per vote
                    views[pid] = (other, other.vote(pid, view.trial_id, "left").next)
        votes, holds = _db_loads(one)
        assert sum(votes.values()) > 0 and sum(holds.values()) > 0
        for service in (one, two):
            with service._write() as session:  # what the next assignment would count
                load = service._cell_load(session)
                copy_holds = load.holds(load_now(), config.consent_hold_s, config.hold_timeout_s)
            assert {c: n for c, n in load.votes.items() if n} == votes
            assert dict(copy_holds) == holds
    finally:
        one.close()
        two.close()


def test_a_rolled_back_vote_leaves_no_trace_in_the_cell_load_copy(study):
    pid = study.join("rollback")
    view = study.consent(pid)
    study.vote(pid, view.trial_id, "left")  # builds the copy
    before = _db_loads(study)
    with pytest.raises(RuntimeError):
        with study._write() as session:
            study._cell_load(session).votes[("x", "y")] += 1
            study._load_dirty = True
            raise RuntimeError("the transaction fails after changing the copy")
    assert study._load is None  # dropped, rebuilt from the database on next use
    view = study.current(pid)
    study.vote(pid, view.trial_id, "left")
    with study._write() as session:
        load = study._cell_load(session)
        assert ("x", "y") not in load.votes
    votes, _ = _db_loads(study)
    assert {c: n for c, n in load.votes.items() if n} == votes and sum(votes.values()) > sum(before[0].values())


def load_now():
    from study.db import utcnow

    return utcnow()
