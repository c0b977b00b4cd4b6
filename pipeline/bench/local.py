"""`python -m pipeline bench --suite local`: what editing only the named region saves at 4K.

In one process and one run, for SynthEdit test scenes of three kinds of edit (recolour, remove, a
global colour look), `mobilepicasso` and `mobilepicasso-paper` edit the same source at 3840x2160;
each row is one run (wall time, stage times, peak memory, the share of the frame that went through
the generative path, SR tiles run and skipped). The summary gives, per kind, the median times and
the speed-up (paper median / mobilepicasso median) and the peak-memory ratio. A warm-up edit runs
first so neither method pays for loading the models.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import synthedit as se

KINDS = {"recolour": "recolour", "remove": "remove", "global look": "global"}
LOCAL_METHODS = ("mobilepicasso", "mobilepicasso-paper")


def scenes(per_kind: int) -> list[tuple[str, se.EditExample]]:
    """The first `per_kind` 16:9 test scenes of each kind (global: colour looks only, not snow)."""
    out = []
    for kind, family in KINDS.items():
        found = 0
        for seed in se.split_seeds("test", 2000):
            ex = se.sample(seed)
            if ex.family != family or abs(ex.source_scene.aspect - 16 / 9) > 1e-6 or ex.look == "snow":
                continue
            out.append((kind, ex))
            found += 1
            if found == per_kind:
                break
    return out


def run(out: Path, models: str = "mini", per_kind: int = 3, size: tuple[int, int] = (3840, 2160)) -> pd.DataFrame:
    from pipeline import edit

    todo = scenes(per_kind)
    warm = todo[0][1]
    edit(warm.source(*size), warm.instruction, size=size, models=models)
    rows = []
    for kind, ex in todo:
        source = ex.source(*size)
        for method in LOCAL_METHODS:
            r = edit(source, ex.instruction, method=method, size=size, models=models, seed=0).report
            region = r.region or {}
            rows.append({"kind": kind, "seed": ex.seed, "instruction": ex.instruction, "method": method,
                         "size": f"{size[0]}x{size[1]}", "seconds": r.total_seconds,
                         "peak_memory_mib": r.peak_memory_bytes / 2**20,
                         "generative_share": region.get("generative", ""), "tiles_run": region.get("generative_tiles", ""),
                         "tiles_skipped": region.get("skipped_tiles", ""),
                         "stages": json.dumps(r.stage_seconds)})
    runs = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "local_speed_runs.csv", index=False)
    summary = summarise(runs)
    summary.to_csv(out / "local_speed.csv", index=False)
    return summary


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for kind, g in runs.groupby("kind", sort=False):
        med = g.groupby("method")[["seconds", "peak_memory_mib"]].median()
        mp, paper = med.loc["mobilepicasso"], med.loc["mobilepicasso-paper"]
        rows.append({"kind": kind, "n": int((g["method"] == "mobilepicasso").sum()),
                     "mobilepicasso_s": round(mp["seconds"], 3), "paper_s": round(paper["seconds"], 3),
                     "speedup_x": round(paper["seconds"] / mp["seconds"], 2),
                     "mobilepicasso_peak_mib": round(mp["peak_memory_mib"], 1),
                     "paper_peak_mib": round(paper["peak_memory_mib"], 1),
                     "memory_ratio": round(mp["peak_memory_mib"] / paper["peak_memory_mib"], 3)})
    return pd.DataFrame(rows)
