"""Synthetic participants with known preferences, driven through the real server code path.

Each simulated participant joins, consents and answers until done, in its own thread, either
over HTTP (the JSON API: also the load test) or in-process (``StudyService`` directly). To
answer it needs the hidden truth, so it reads the provenance (content-hash file -> method)
from the database, like an oracle; the server it talks to never reveals it.
"""
from __future__ import annotations

import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import select

from study.db import BROKEN_METHOD, Output, make_engine, session_factory


def parse_truth(specs: list[str] | None) -> dict[tuple[str, str], float]:
    """``"a>b:0.7"`` -> {(a, b): 0.7, (b, a): 0.3}; unspecified pairs are 0.5."""
    truth: dict[tuple[str, str], float] = {}
    for spec in specs or []:
        pair, _, prob = spec.partition(":")
        winner, _, loser = pair.partition(">")
        p = float(prob or 1.0)
        if not winner or not loser or not 0 <= p <= 1:
            raise ValueError(f"--truth must look like 'a>b:0.7', got {spec!r}")
        truth[(winner.strip(), loser.strip())] = p
        truth[(loser.strip(), winner.strip())] = 1 - p
    return truth


def parse_rates(specs: list[str] | None, default: float) -> dict[str, float]:
    rates = {}
    for spec in specs or []:
        method, _, rate = spec.partition(":")
        rates[method.strip()] = float(rate)
    rates.setdefault(BROKEN_METHOD, 0.9)
    rates.setdefault("*", default)
    return rates


def oracle_from_db(db_url: str | Path) -> dict[str, str]:
    """Stimulus file name -> method, from the outputs table."""
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            return {o.path: o.method for o in session.scalars(select(Output).where(Output.path.is_not(None)))}
    finally:
        engine.dispose()


class Transport(Protocol):
    def join(self, pid: str) -> dict: ...
    def consent(self, pid: str) -> dict: ...
    def current(self, pid: str) -> dict: ...
    def vote(self, pid: str, trial_id: int, choice: str, hl: bool, hr: bool,
             latency_ms: int | None = None) -> dict: ...


class HTTPTransport:
    """The JSON API (``/study/api``) over HTTP, one connection pool per participant."""

    def __init__(self, base_url: str, timeout: float = 60.0):
        import httpx

        self.base = base_url.rstrip("/") + "/study/api"
        self._local = threading.local()
        self._httpx = httpx
        self.timeout = timeout

    @property
    def client(self):
        if not hasattr(self._local, "client"):
            self._local.client = self._httpx.Client(timeout=self.timeout, trust_env=False)
        return self._local.client

    def _ok(self, response) -> dict:
        response.raise_for_status()
        return response.json()

    def join(self, pid):
        return self._ok(self.client.post(f"{self.base}/session", json={"pid": pid}))

    def consent(self, pid):
        return self._ok(self.client.post(f"{self.base}/consent", json={"participant": pid}))

    def current(self, pid):
        return self._ok(self.client.get(f"{self.base}/trial", params={"participant": pid}))

    def vote(self, pid, trial_id, choice, hl, hr, latency_ms=None):
        return self._ok(self.client.post(f"{self.base}/vote", json={
            "participant": pid, "trial_id": trial_id, "choice": choice,
            "halluc_left": hl, "halluc_right": hr, "client_latency_ms": latency_ms}))


class InProcessTransport:
    """``StudyService`` called directly (same code path as the handlers, without HTTP)."""

    def __init__(self, service):
        self.service = service

    def join(self, pid):
        return self.service.current(self.service.join(pid)).to_dict()

    def consent(self, pid):
        return self.service.consent(pid).to_dict()

    def current(self, pid):
        return self.service.current(pid).to_dict()

    def vote(self, pid, trial_id, choice, hl, hr, latency_ms=None):
        return self.service.vote(pid, trial_id, choice, hl, hr, client="inprocess",
                                 client_latency_ms=latency_ms).to_dict()


@dataclass
class SimulatedParticipant:
    pid: str
    truth: dict[tuple[str, str], float]
    halluc: dict[str, float]
    careful: bool = True
    tie_rate: float = 0.1
    think_s: float = 0.0
    seed: int = 0

    def decision_ms(self, rng: random.Random) -> int:
        """The simulated time to answer, reported as the client-measured response time: careful
        participants take a few seconds (log-normal, median 4 s), careless ones click through."""
        if not self.careful:
            return int(rng.uniform(300, 900))
        return int(min(60_000, rng.lognormvariate(8.29, 0.5)))  # exp(8.29) ~ 4 s

    def choose(self, method_left: str, method_right: str, rng: random.Random) -> tuple[str, bool, bool]:
        h_left = rng.random() < self.halluc.get(method_left, self.halluc["*"])
        h_right = rng.random() < self.halluc.get(method_right, self.halluc["*"])
        if BROKEN_METHOD in (method_left, method_right) and self.careful:
            return ("right" if method_left == BROKEN_METHOD else "left"), h_left, h_right
        if not self.careful:
            return rng.choice(["left", "right", "both_good", "both_bad"]), h_left, h_right
        if rng.random() < self.tie_rate:
            return rng.choice(["both_good", "both_bad"]), h_left, h_right
        p_left = self.truth.get((method_left, method_right), 0.5)
        return ("left" if rng.random() < p_left else "right"), h_left, h_right


@dataclass
class SimulationReport:
    participants: int = 0
    acknowledged: int = 0      # votes the server answered "recorded"
    duplicates: int = 0        # deliberate re-submissions the server answered "duplicate"
    completed: int = 0
    no_work: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    acked_trials: list[int] = field(default_factory=list)
    vote_latency_s: list[float] = field(default_factory=list)  # request time of every vote call

    def vote_latency_quantile(self, q: float) -> float:
        values = sorted(self.vote_latency_s)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    @property
    def votes_per_s(self) -> float:
        return self.acknowledged / self.wall_s if self.wall_s else 0.0


def run_participant(transport: Transport, sim: SimulatedParticipant, oracle: dict[str, str],
                    report: SimulationReport, lock: threading.Lock, double_submit: float = 0.0,
                    max_trials: int | None = None) -> None:
    rng = random.Random(sim.seed)
    view = transport.join(sim.pid)
    if view["status"] == "consent":
        view = transport.consent(sim.pid)
    answered = 0
    while view["status"] == "trial" and (max_trials is None or answered < max_trials):
        shown = time.perf_counter()
        left = oracle[view["left"].rsplit("/", 1)[-1]]
        right = oracle[view["right"].rsplit("/", 1)[-1]]
        choice, hl, hr = sim.choose(left, right, rng)
        if sim.think_s:
            time.sleep(sim.think_s)
        latency_ms = sim.decision_ms(rng) + int(1000 * (time.perf_counter() - shown))
        sent = time.perf_counter()
        result = transport.vote(sim.pid, view["trial_id"], choice, hl, hr, latency_ms)
        took = time.perf_counter() - sent
        with lock:
            report.vote_latency_s.append(took)
            if result["status"] == "recorded":
                report.acknowledged += 1
                report.acked_trials.append(view["trial_id"])
        if double_submit and rng.random() < double_submit:  # a double click
            again = transport.vote(sim.pid, view["trial_id"], choice, hl, hr, latency_ms)
            with lock:
                report.duplicates += again["status"] == "duplicate"
        view = result["next"]
        answered += 1
    with lock:
        report.completed += view["status"] == "done"
        report.no_work += view["status"] == "no_work"


def simulate(transport: Transport, oracle: dict[str, str], participants: int,
             truth: dict[tuple[str, str], float], halluc: dict[str, float], careless: float = 0.05,
             tie_rate: float = 0.1, think_s: float = 0.0, seed: int = 0, prefix: str = "sim",
             double_submit: float = 0.0, max_trials: int | None = None,
             concurrency: int | None = None) -> SimulationReport:
    """Run ``participants`` synthetic participants concurrently; returns what the server acknowledged."""
    rng = random.Random(seed)
    sims = [SimulatedParticipant(f"{prefix}-{seed}-{i:03d}", truth, halluc,
                                 careful=rng.random() >= careless, tie_rate=tie_rate,
                                 think_s=think_s, seed=rng.randrange(2**31))
            for i in range(participants)]
    report = SimulationReport(participants=participants)
    lock = threading.Lock()
    started = time.perf_counter()

    def one(sim):
        try:
            run_participant(transport, sim, oracle, report, lock, double_submit, max_trials)
        except Exception as exc:  # reported, not raised: the load test counts failures
            with lock:
                report.errors.append(f"{sim.pid}: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=concurrency or max(1, participants)) as pool:
        list(pool.map(one, sims))
    report.wall_s = time.perf_counter() - started
    return report
