"""Fault test: the server process is SIGKILLed mid-study; every acknowledged vote survives and
participants resume where they were after a restart (SQLite file and PostgreSQL schema,
subprocess server)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from study.db import Trial, Vote, make_engine, session_factory
from study.simulate import oracle_from_db
from test_study_support import db_url, free_port, prepare_study  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def start_server(db: str, stimuli: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "serve", "--db", str(db), "--stimuli", str(stimuli),
         "--port", str(port), "--trials", "30"],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300  # generous: importing Gradio on a loaded machine is slow
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/study/api/trial", params={"participant": "x"},
                         trust_env=False, timeout=30).status_code == 400:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.mark.slow
def test_sigkill_mid_study_loses_no_acknowledged_vote(db_url, tmp_path):
    db = db_url
    stimuli = prepare_study(db, tmp_path / "stimuli")
    oracle = oracle_from_db(db)
    port = free_port()
    api = f"http://127.0.0.1:{port}/study/api"
    proc = start_server(db, stimuli, port, tmp_path / "server.log")
    acked: dict[str, list[int]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def participant(pid: str) -> None:
        client = httpx.Client(trust_env=False, timeout=60)
        try:
            client.post(f"{api}/session", json={"pid": pid})
            view = client.post(f"{api}/consent", json={"participant": pid}).json()
            while view["status"] == "trial" and not stop.is_set():
                side = "left" if oracle[view["left"].rsplit("/", 1)[-1]] != "broken" else "right"
                reply = client.post(f"{api}/vote", json={"participant": pid, "trial_id": view["trial_id"],
                                                         "choice": side})
                reply.raise_for_status()
                with lock:  # acknowledged: the server answered after committing
                    acked.setdefault(pid, []).append(view["trial_id"])
                view = reply.json()["next"]
        except httpx.HTTPError:
            pass  # the server died under us
        finally:
            client.close()

    pids = [f"fault{i}" for i in range(8)]
    threads = [threading.Thread(target=participant, args=(pid,)) for pid in pids]
    for t in threads:
        t.start()
    deadline = time.time() + 300
    while sum(map(len, acked.values())) < 60 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-study, with requests in flight
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    n_acked = sum(map(len, acked.values()))
    assert n_acked >= 60

    engine = make_engine(db)
    with session_factory(engine)() as session:
        stored = set(session.scalars(select(Vote.trial_id)))
        answered = {pid: n for pid, n in session.execute(
            select(Trial.participant_id, func.count(Vote.id)).join(Vote, Vote.trial_id == Trial.id)
            .group_by(Trial.participant_id))}
    engine.dispose()
    lost = {t for ids in acked.values() for t in ids} - stored
    assert not lost, f"{len(lost)} acknowledged votes lost"
    print(f"fault test: {len(acked)} participants, {n_acked} acknowledged votes, "
          f"{len(stored)} stored, {len(lost)} lost")

    port2 = free_port()
    proc2 = start_server(db, stimuli, port2, tmp_path / "server.log")
    try:
        for pid in pids:
            if pid not in acked:  # killed before any vote, perhaps before it joined: it joins again
                view = httpx.post(f"http://127.0.0.1:{port2}/study/api/session", json={"pid": pid},
                                  trust_env=False, timeout=60).json()
                assert view["status"] in ("consent", "trial")
                continue
            view = httpx.get(f"http://127.0.0.1:{port2}/study/api/trial", params={"participant": pid},
                             trust_env=False, timeout=60).json()
            assert view["status"] == "trial"
            assert view["k"] >= len(acked.get(pid, [])) + 1  # resumes after its last stored vote
            assert view["trial_id"] not in stored
    finally:
        proc2.send_signal(signal.SIGTERM)
        try:
            proc2.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc2.kill()
    assert answered  # the participants' progress was persisted
