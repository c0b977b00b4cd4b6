"""One pre-registered exclusion rule: response times measured by the client, attention checks
scaled to the number of trials, and the same verdicts in the server, the export and the analysis."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from study.config import StudyConfig
from study.db import Trial, votes_frame
from study.exclusion import ExclusionRule
from study.service import StudyService
from test_study_support import db_url, prepare_study  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def service(db_url, tmp_path):
    service = StudyService(db_url, prepare_study(db_url, tmp_path / "stimuli"),
                           StudyConfig(trials_per_participant=20, new_participants_burst=0))
    yield service
    service.close()


def play(service, pid, latency_ms, delay_s=0.0, wrong_attention=False):
    """Answer every trial; ``delay_s`` backdates each trial's served_at (a slow server or network)."""
    view = service.consent(service.join(pid))
    while view.status == "trial":
        if delay_s:
            with service.Session.begin() as session:
                trial = session.get(Trial, view.trial_id)
                trial.served_at = trial.served_at - dt.timedelta(seconds=delay_s)
        with service.ReadSession() as session:
            trial = session.get(Trial, view.trial_id)
        choice = "left"
        if trial.kind == "attention":
            choice = ("right" if trial.expected == "left" else "left") if wrong_attention else trial.expected
        view = service.vote(pid, view.trial_id, choice, client_latency_ms=latency_ms).next
    return view


def test_speed_is_measured_by_the_client_not_the_server(service, db_url):
    play(service, "clicker", latency_ms=400, delay_s=3.0)   # fast clicks behind a slow server
    play(service, "careful", latency_ms=4000)                # careful answers from a fast server
    frame = votes_frame(db_url)
    by = {pid: rows for pid, rows in frame.groupby("participant_id")}
    clicker, careful = by["p0001"], by["p0002"]
    assert (clicker.latency_ms == 400).all() and (clicker.latency_source == "client").all()
    assert (clicker.server_latency_ms >= 3000).all() and clicker.fast_flag.all()
    assert clicker.excluded.all() and "faster than" in clicker.exclusion_reason.iloc[0]
    assert (careful.latency_ms == 4000).all() and not careful.fast_flag.any() and not careful.excluded.any()


def test_attention_checks_scale_so_the_rule_can_fire_at_20_trials(service, db_url):
    assert list(service.check_plan(20).values()).count("attention") >= 5
    play(service, "inattentive", latency_ms=5000, wrong_attention=True)
    play(service, "attentive", latency_ms=5000)
    quality = service.exclusions().set_index("participant")
    assert quality.loc["p0001", "attention_total"] >= 5 and quality.loc["p0001", "excluded"]
    assert quality.loc["p0002", "attention_failed"] == 0 and not quality.loc["p0002", "excluded"]


def test_server_export_and_analysis_apply_the_same_rule(service, db_url, tmp_path):
    from study.analysis import votes as analysis_votes

    assert analysis_votes.ExclusionRule is ExclusionRule
    assert StudyConfig().rule == ExclusionRule()  # the server's defaults are the analysis's defaults
    assert StudyConfig().exclusion_rule() == ExclusionRule().describe()
    play(service, "bot", latency_ms=300)
    play(service, "sloppy", latency_ms=3000, wrong_attention=True)
    play(service, "good", latency_ms=3000)
    csv = tmp_path / "votes.csv"
    votes_frame(db_url).to_csv(csv, index=False)
    exported = analysis_votes.read_votes_csv(csv)
    verdict = analysis_votes.participant_quality(analysis_votes.validate_votes(exported), ExclusionRule())
    excluded_by_analysis = set(verdict.loc[verdict.excluded, "participant_id"])
    excluded_by_export = set(exported.loc[exported.excluded == 1, "participant_id"])
    excluded_by_server = set(service.exclusions().query("excluded").participant)
    assert excluded_by_analysis == excluded_by_export == excluded_by_server == {"p0001", "p0002"}


def test_the_analysis_needs_no_database_or_server():
    code = ("import sys, study.analysis.report, study.analysis.cli, study.analysis.votes\n"
            "bad = [m for m in sys.modules if m in ('study.db', 'study.service', 'study.server', 'sqlalchemy', 'gradio')]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
