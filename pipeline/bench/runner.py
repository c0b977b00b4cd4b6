"""Launch workers one at a time, each in its own process with a wall-clock limit.

A worker that raises writes its failure into its JSON; one that is killed (out of memory, a
signal) or runs past the limit writes nothing, and the runner turns that into a failure row.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def run_worker(mode: str, spec: dict, timeout: float | None, workdir: Path) -> dict:
    """Run `python -m pipeline.bench.worker MODE spec out` and return its JSON (or a failure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{mode}-", suffix=".json", dir=workdir)
    os.close(fd)
    spec_path, out_path, log_path = Path(name), Path(name).with_suffix(".out.json"), Path(name).with_suffix(".log")
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "pipeline.bench.worker", mode, str(spec_path), str(out_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "TQDM_DISABLE": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=Path(__file__).resolve().parents[2])
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"status": "failed", "failure_reason": f"timeout: killed after {timeout:.0f} s (the per-run limit)"}
    if out_path.is_file():
        return json.loads(out_path.read_text())
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.is_file() else []
    if rc < 0:
        sig = signal.Signals(-rc).name
        why = " (the kernel's out-of-memory killer sends this)" if sig == "SIGKILL" else ""
        return {"status": "failed", "failure_reason": f"crashed: killed by {sig}{why}"}
    return {"status": "failed", "failure_reason": f"crashed: exit status {rc}" + (f": {tail[0][:200]}" if tail else "")}


def run_all(mode: str, specs: Sequence[dict], *, timeout: float | None, workdir: Path,
            label: Callable[[dict], str], progress: bool = True, desc: str = "bench",
            on_result: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run every spec in order under one progress bar; each result carries its spec as "run".
    `on_result` gets the results so far after each run (a killed benchmark keeps its finished rows)."""
    from tqdm import tqdm

    results = []
    bar = tqdm(total=len(specs), desc=desc, unit="run", disable=not progress, dynamic_ncols=True)
    for spec in specs:
        bar.set_postfix_str(label(spec), refresh=True)
        result = run_worker(mode, spec, timeout, workdir)
        result.setdefault("run", spec)
        results.append(result)
        if on_result is not None:
            on_result(results)
        bar.update(1)
    bar.close()
    return results
