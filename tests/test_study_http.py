"""HTTP: blinding of every participant-facing payload and file, admin token, small load test."""
from __future__ import annotations

import re
import struct

import httpx
import pytest
from sqlalchemy import func, select

from study.config import StudyConfig
from study.db import Vote
from study.server import build_app
from study.service import StudyService
from study.simulate import HTTPTransport, oracle_from_db, parse_rates, parse_truth, simulate
from test_study_support import METHOD_WORDS, ThreadServer, db_url, prepare_study  # noqa: F401

TOKEN = "s3cret-admin-token"


@pytest.fixture
def server(db_url, tmp_path):
    stimuli = prepare_study(db_url, tmp_path / "stimuli")
    service = StudyService(db_url, stimuli, StudyConfig(trials_per_participant=10))
    with ThreadServer(build_app(service, admin_token=TOKEN)) as running:
        running.service = service
        yield running
    service.close()


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names = 8, []
    while pos < len(data):
        length, name = struct.unpack(">I4s", data[pos:pos + 8])
        names.append(name.decode())
        pos += 12 + length
    return names


def assert_blind(text: str) -> None:
    lowered = text.lower()
    for word in METHOD_WORDS:
        assert word not in lowered, f"method name {word!r} leaked"


def test_participant_payloads_pages_and_files_are_blind(server):
    client = httpx.Client(base_url=server.url, trust_env=False, timeout=30)
    api = "/study/api"
    view = client.post(f"{api}/session", json={"pid": "blindtest"}).json()
    assert view["status"] == "consent"
    view = client.post(f"{api}/consent", json={"participant": "blindtest"}).json()
    kinds_seen = 0
    while view["status"] == "trial":
        assert_blind(str(view))
        assert set(view) == {"status", "participant", "trial_id", "k", "n", "instruction", "source",
                             "left", "right", "completion_code"}
        for key in ("source", "left", "right"):
            assert re.fullmatch(r"/study/api/stimuli/[0-9a-f]{32}\.png", view[key])
            data = client.get(view[key]).content
            assert png_chunks(data) == ["IHDR"] + ["IDAT"] * (len(png_chunks(data)) - 2) + ["IEND"]
            assert_blind(data.decode("latin-1"))
        again = client.get(f"{api}/trial", params={"participant": "blindtest"}).json()
        assert again == view  # reload returns the same trial
        reply = client.post(f"{api}/vote", json={"participant": "blindtest", "trial_id": view["trial_id"],
                                                 "choice": "left", "halluc_left": True}).json()
        assert reply["status"] == "recorded"
        dup = client.post(f"{api}/vote", json={"participant": "blindtest", "trial_id": view["trial_id"],
                                               "choice": "right"}).json()
        assert dup["status"] == "duplicate" and dup["next"] == reply["next"]
        assert_blind(str(reply))
        view = reply["next"]
        kinds_seen += 1
    assert kinds_seen == 10 and view["status"] == "done" and view["completion_code"]
    # the Gradio participant page and its config carry no method names either
    for path in ("/?pid=blindtest", "/config"):
        response = client.get(path)
        assert response.status_code == 200
        assert_blind(response.text)
    for file in server.service.stimuli_dir.rglob("*"):
        assert_blind(file.name)
    assert client.get(f"{api}/stimuli/..%2Fstudy.db").status_code == 404
    assert client.get(f"{api}/trial", params={"participant": "nobody"}).status_code == 400


def test_admin_endpoints_require_the_token(server):
    client = httpx.Client(base_url=server.url, trust_env=False, timeout=30)
    for report in ("progress", "participants", "exclusions", "export"):
        url = f"/study/api/admin/{report}"
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(url, headers={"X-Admin-Token": TOKEN}).status_code == 200
    progress = client.get("/study/api/admin/progress", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert len(progress["rows"]) == 36 and "mobilepicasso" in str(progress)


def test_admin_is_closed_without_a_configured_token(db_url, tmp_path, monkeypatch):
    monkeypatch.delenv("STUDY_ADMIN_TOKEN", raising=False)
    service = StudyService(db_url, prepare_study(db_url, tmp_path / "stimuli"))
    with ThreadServer(build_app(service)) as running:
        response = httpx.get(f"{running.url}/study/api/admin/progress", headers={"X-Admin-Token": ""},
                             trust_env=False)
        assert response.status_code == 401
    service.close()


def test_load_10_participants_x_10_trials_over_http(server, db_url):
    report = simulate(HTTPTransport(server.url), oracle_from_db(db_url), participants=10,
                      truth=parse_truth(["mobilepicasso>ip2p-direct:0.7"]), halluc=parse_rates(None, 0.1),
                      double_submit=0.2, seed=3)
    assert not report.errors
    assert report.acknowledged == 100 and report.completed == 10
    with server.service.Session() as session:
        stored = session.scalar(select(func.count(Vote.id)))
        distinct = session.scalar(select(func.count(func.distinct(Vote.trial_id))))
    assert stored == distinct == 100
    assert sorted(report.acked_trials) == sorted(set(report.acked_trials))
