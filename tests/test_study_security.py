"""The study server refuses forged codes, unbounded input, floods and everything that is not the
participant flow, the JSON API or the admin routes (SQLite and PostgreSQL)."""
from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from study import schedule
from study.config import StudyConfig
from study.db import Participant
from study.server import build_app
from study.service import StudyError, StudyService
from test_study_support import ThreadServer, db_url, prepare_study  # noqa: F401  (fixture)

TOKEN = "an-admin-token"
QUICK = dict(min_attention_checks=0, attention_share=0, repeat_share=0)


@pytest.fixture
def stimuli(db_url, tmp_path):
    return prepare_study(db_url, tmp_path / "stimuli")


def serve(db_url, stimuli, **config):
    service = StudyService(db_url, stimuli, StudyConfig(**config))
    running = ThreadServer(build_app(service, admin_token=TOKEN))
    running.service = service
    return running


def finish(client: httpx.Client, pid: str) -> dict:
    client.post("/study/api/session", json={"pid": pid}).raise_for_status()
    view = client.post("/study/api/consent", json={"participant": pid}).json()
    while view["status"] == "trial":
        view = client.post("/study/api/vote", json={"participant": pid, "trial_id": view["trial_id"],
                                                    "choice": "left"}).json()["next"]
    return view


def test_completion_codes_cannot_be_derived_from_anything_a_participant_receives(db_url, stimuli):
    with serve(db_url, stimuli, trials_per_participant=2, **QUICK) as server:
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=60)
        received = client.get("/config").text + client.get("/?pid=code-a").text
        codes = {pid: finish(client, pid)["completion_code"] for pid in ("code-a", "code-b")}
        assert all(re.fullmatch(r"[0-9A-F]{10}", c) for c in codes.values()) and len(set(codes.values())) == 2
        # the old scheme: blake2b(secret, pid) with a secret Gradio put in the page config
        candidates = set(re.findall(r"[0-9a-f]{16,}", received))
        assert server.service.browser_key in candidates  # Gradio's BrowserState key is public ...
        for secret in candidates:  # ... and no public value derives any code
            for pid, code in codes.items():
                assert f"{schedule.stable_hash(secret, pid):016X}"[:10] != code
        with server.service.Session() as session:  # issued codes are stored with the participant
            stored = dict(session.execute(select(Participant.public_id, Participant.completion_code)).tuples().all())
        assert {pid: stored[pid] for pid in codes} == codes
        assert finish(client, "code-a")["completion_code"] == codes["code-a"]  # stable on reload
    server.service.close()


def test_ids_out_of_range_are_refused_not_500(db_url, stimuli):
    with serve(db_url, stimuli, trials_per_participant=4, **QUICK) as server:
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=60)
        client.post("/study/api/session", json={"pid": "bounds"})
        client.post("/study/api/consent", json={"participant": "bounds"})
        for trial_id in (2**31, 2**63, 2**70, -1, 0):
            reply = client.post("/study/api/vote", json={"participant": "bounds", "trial_id": trial_id,
                                                         "choice": "left"})
            assert reply.status_code == 422, (trial_id, reply.status_code)
        reply = client.post("/study/api/vote", json={"participant": "x" * 129, "trial_id": 1, "choice": "left"})
        assert reply.status_code == 422
        assert client.get("/study/api/trial", params={"participant": "y" * 500}).status_code == 422
    with pytest.raises(StudyError):
        server.service.vote("bounds", 2**63, "left")
    server.service.close()


def test_participant_ids_with_a_trailing_newline_are_refused(db_url, stimuli):
    service = StudyService(db_url, stimuli)
    try:
        for bad in ("abc\n", "abc\r\n", "a b", "", "\nabc", "x" * 129):
            with pytest.raises(StudyError):
                service.join(bad) if bad else service._participant(None, bad)
        assert service.join("abc") == "abc"
        with pytest.raises(StudyError):
            service.current("abc\n")
    finally:
        service.close()
    with serve(db_url, stimuli) as server:
        reply = httpx.post(f"{server.url}/study/api/session", json={"pid": "abc\n"}, trust_env=False)
        assert reply.status_code == 400
    server.service.close()


def test_throwaway_ids_do_not_lock_out_real_participants(db_url, stimuli):
    """36 scripted session+consent calls, each holding one cell of a study with room for 2 votes
    per cell: holds never turn a real participant away, and a flood from one address is limited."""
    config = StudyConfig(trials_per_participant=10, max_votes_per_cell=2, new_participants_burst=0)
    service = StudyService(db_url, stimuli, config)
    try:
        for i in range(36):
            service.consent(service.join(f"throwaway{i:02d}", client="10.0.0.9"))
        real = service.consent(service.join("real-participant", client="10.0.0.1"))
        assert real.status == "trial" and real.n == 10
    finally:
        service.close()

    with serve(db_url, stimuli, trials_per_participant=10, max_votes_per_cell=2) as server:
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=60)
        status = [client.post("/study/api/session", json={"pid": f"flood{i:02d}"}).status_code
                  for i in range(36)]
        assert status[:20] == [200] * 20 and set(status[20:]) == {429}
        refused = client.post("/study/api/session", json={"pid": "flood99"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert client.post("/study/api/session", json={"pid": "flood00"}).status_code == 200  # known id
    server.service.close()


def test_a_first_trial_holds_its_cell_only_briefly(db_url, stimuli):
    import time

    config = StudyConfig(trials_per_participant=10, max_votes_per_cell=1, consent_hold_s=0.5,
                         new_participants_burst=0)
    service = StudyService(db_url, stimuli, config)
    try:
        first = service.consent(service.join("holder"))
        with service.ReadSession() as session:
            assert sum(service._cell_holds(session).values()) == 1
        time.sleep(0.6)
        with service.ReadSession() as session:
            assert sum(service._cell_holds(session).values()) == 0
        assert first.status == "trial"
    finally:
        service.close()


def test_request_bodies_are_bounded(db_url, stimuli):
    with serve(db_url, stimuli) as server:
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=60)
        big = b'{"pid": "' + b"a" * (1 << 20) + b'"}'
        reply = client.post("/study/api/session", content=big, headers={"content-type": "application/json"})
        assert reply.status_code == 413

        def chunks():
            for _ in range(64):
                yield b"x" * 4096

        reply = client.post("/study/api/vote", content=chunks(), headers={"content-type": "application/json"})
        assert reply.status_code == 413
        assert client.post("/study/api/session", json={"pid": "small-enough"}).status_code == 200
    server.service.close()


def test_only_the_participant_flow_the_json_api_and_admin_are_served(db_url, stimuli):
    planted = stimuli / "planted.txt"
    planted.write_text("not a stimulus")
    copy = stimuli / ("ab" * 16 + ".png")
    copy.write_bytes(next(stimuli.glob("*.png")).read_bytes())
    with serve(db_url, stimuli) as server:
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=60)
        for path in ("/?pid=flow", "/config", "/theme.css"):
            assert client.get(path).status_code == 200, path
        assert client.get("/study/api/admin/progress", headers={"X-Admin-Token": TOKEN}).status_code == 200
        a_stimulus = server.service.allowed_paths[0]
        assert client.get(f"/gradio_api/file={a_stimulus}").status_code == 200
        for path in ("/openapi.json", "/docs", "/gradio_api/openapi.json", "/gradio_api/info",
                     "/monitoring", "/gradio_api/upload_progress", "/gradio_api/mcp/sse", "/runs",
                     "/gradio_api/api/edit", "/gradio_api/run/predict", "/manifest.json",
                     f"/gradio_api/file={planted}", f"/gradio_api/file={copy}",
                     f"/study/api/stimuli/{copy.name}"):
            assert client.get(path).status_code in (403, 404), path
        upload = client.post("/gradio_api/upload", files={"files": ("x.png", b"\x89PNG....")})
        assert upload.status_code == 404
    server.service.close()


def test_the_counter_never_promises_trials_that_do_not_exist(db_url, stimuli):
    """60 trials asked for, 36 cells: the participant is told the number they will get."""
    service = StudyService(db_url, stimuli, StudyConfig(trials_per_participant=60, fast_threshold_s=0))
    try:
        view = service.consent(service.join("counter"))
        promised = view.n
        checks = len(service.check_plan(promised))
        assert promised - checks == len(service.catalog.cells) and promised < 60
        answered = 0
        while view.status == "trial":
            assert view.n == promised and view.k == answered + 1
            view = service.vote("counter", view.trial_id, "left").next
            answered += 1
        assert view.status == "done" and answered == promised == view.k == view.n
    finally:
        service.close()
