"""`python -m study bench`: the study server's throughput and vote latency under load.

For each database it prepares placeholder stimuli (``prepare --dry-run``), starts ``serve`` as a
subprocess (uvicorn, one process), runs ``simulate`` over HTTP with N concurrent participants
(a share of votes deliberately sent twice), checks that every acknowledged vote is stored, and
adds one row to a CSV (earlier rows are kept): votes/s, vote latency quantiles as the clients saw
them, lost and duplicate counts, the server's and the client's CPU time per vote, the load average
and the measured commit. It is a benchmark, not a test: the numbers depend on the machine and on
what else runs on it (CPU per vote much less than votes/s).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

FIELDS = ["database", "participants", "trials", "votes_acknowledged", "votes_stored", "lost",
          "duplicates_refused", "errors", "wall_s", "votes_per_s", "p50_ms", "p95_ms", "p99_ms",
          "max_ms", "server_cpu_ms_per_vote", "client_cpu_ms_per_vote", "load_avg_1m", "cpus",
          "python", "date", "server", "revision"]


def _revision() -> str:
    """The measured code's commit (``+`` when the study code differs from it), if in a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "study"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if dirty else "")


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``; None elsewhere). CPU per vote does
    not depend on how busy the machine is, unlike votes/s, so it compares runs on a shared host."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _server_flavour() -> str:
    """Which uvicorn HTTP parser and event loop ``serve`` gets (its ``auto`` choice)."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn {http}/{loop}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(port: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            httpx.get(f"http://127.0.0.1:{port}/study/api/trial", params={"participant": "x"},
                      trust_env=False, timeout=5)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("server did not start")


def _pg_schema(base_url: str) -> tuple[str, callable]:
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"

    def drop():
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    return f"{base_url}{sep}options=-csearch_path%3D{schema}", drop


def run_one(database: str, db_url: str, workdir: Path, participants: int, trials: int,
            double_submit: float, seed: int) -> dict:
    from study.db import stored_votes
    from study.simulate import HTTPTransport, oracle_from_db, parse_rates, parse_truth, simulate
    from study.stimuli import dry_run_renderer, prepare, read_items

    stimuli = workdir / "stimuli"
    prepare(read_items(Path(__file__).parent / "items.csv"),
            ["mobilepicasso", "ip2p-direct", "ip2p-realesrgan", "tiled-overlap"], "512", stimuli,
            db_url, render=dry_run_renderer, progress=False)
    port = _free_port()
    log = (workdir / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "serve", "--db", db_url, "--stimuli", str(stimuli),
         "--port", str(port), "--trials", str(trials), "--new-participants-burst", "0"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1])] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_up(port, proc)
        server_cpu, client_cpu = _cpu_s(proc.pid), time.process_time()
        loads = [os.getloadavg()[0]]
        report = simulate(HTTPTransport(f"http://127.0.0.1:{port}"), oracle_from_db(db_url), participants,
                          parse_truth(["mobilepicasso>ip2p-direct:0.7"]), parse_rates(None, 0.1),
                          double_submit=double_submit, seed=seed, prefix=f"bench{seed}")
        server_cpu = _cpu_s(proc.pid) - server_cpu if server_cpu is not None else None
        client_cpu = time.process_time() - client_cpu
        loads.append(os.getloadavg()[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    stored = stored_votes(db_url, report.acked_trials)
    n = max(1, report.acknowledged)  # the server's CPU time over the run, per acknowledged vote
    q = report.vote_latency_quantile
    return {"database": database, "participants": participants, "trials": trials,
            "votes_acknowledged": report.acknowledged, "votes_stored": stored,
            "lost": len(set(report.acked_trials)) - stored, "duplicates_refused": report.duplicates,
            "errors": len(report.errors), "wall_s": round(report.wall_s, 2),
            "votes_per_s": round(report.votes_per_s, 1), "p50_ms": round(1000 * q(0.5)),
            "p95_ms": round(1000 * q(0.95)), "p99_ms": round(1000 * q(0.99)), "max_ms": round(1000 * q(1.0)),
            "server_cpu_ms_per_vote": round(1000 * server_cpu / n, 2) if server_cpu is not None else "",
            "client_cpu_ms_per_vote": round(1000 * client_cpu / n, 2),
            "load_avg_1m": round(sum(loads) / len(loads), 1),  # mean of start and end of the run
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "server": _server_flavour(),
            "revision": _revision()}


def main(args: argparse.Namespace) -> int:
    rows = []
    for database in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
            workdir = Path(tmp)
            drop = None
            if database == "sqlite":
                url = str(workdir / "study.db")
            elif database == "postgresql":
                if not args.pg_url:
                    print("skipping postgresql: no --pg-url", file=sys.stderr)
                    continue
                url, drop = _pg_schema(args.pg_url)
            else:
                raise SystemExit(f"unknown database {database!r} (sqlite, postgresql)")
            try:
                row = run_one(database, url, workdir, args.participants, args.trials,
                              args.double_submit, args.seed)
            finally:
                if drop:
                    drop()
        rows.append(row)
        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if rows and args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        earlier = []
        if out.exists():  # rows of earlier runs, kept (columns added since are left empty)
            with out.open(newline="") as handle:
                earlier = list(csv.DictReader(handle))
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(earlier + rows)
        print(f"appended {len(rows)} rows to {out}")
    return 0 if all(r["lost"] == 0 and r["errors"] == 0 for r in rows) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="throughput and vote latency of the server under load")
    p.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--pg-url", default=os.environ.get("MOBILEPICASSO_TEST_PG_URL"),
                   help="PostgreSQL URL (a fresh schema is made and dropped)")
    p.add_argument("--participants", type=int, default=50)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--double-submit", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/study/throughput.csv")
    p.set_defaults(func=main)
