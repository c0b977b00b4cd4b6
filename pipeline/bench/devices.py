"""`python -m pipeline bench --suite devices`: what the device, dtype and memory layout buy at 4K.

In one process and one run, the same SynthEdit test scenes (16:9, with ground truth) are edited at
3840x2160 by each method under each configuration of the same weights:

- `square tiles, fp32`: the previous release: fp32, contiguous weights, square ACPT windows (the
  set's `tile` and `decode_tile`) instead of windows fitted to the resolution;
- `fp32`: the pipeline as loaded (fp32, contiguous weights);
- `fp32+channels_last`: NHWC conv weights (oneDNN's fast layout on CPUs);
- `auto`: `.to(device, "auto")`: fp16 on CUDA; on a CPU with native bf16, bf16 for the
  full-resolution stages and fp32 for the 128-px edit stage; channels_last.

Configurations alternate per scene (fp32, cl, auto, fp32, ...), so drift in the machine's load hits
all of them alike. Each row is one run; the summary gives per method and configuration the median
time, its ratio to the previous release, the peak memory, the PSNR against the ground truth and the
paired PSNR difference to the previous release with a 95% t interval.

`budgets` then runs `mobilepicasso-paper` at 4K in fp32 under `--memory-budget` values from 512 MiB
to 4 GiB and records the working memory measured (peak above the resident weights and runtime)
against the budget: `memory_budget.csv`.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from pipeline import MobilePicassoPipeline
from pipeline import synthedit as se
from pipeline.bench.metrics import psnr
from pipeline.devices import default_device

CONFIGS = ("square tiles, fp32", "fp32", "fp32+channels_last", "auto")
BASELINE = CONFIGS[0]
DEVICE_METHODS = ("mobilepicasso-paper", "mobilepicasso")


def scenes(n: int) -> list[se.EditExample]:
    """The first `n` 16:9 test scenes, any family."""
    found = []
    for seed in se.split_seeds("test", 2000):
        ex = se.sample(seed)
        if abs(ex.source_scene.aspect - 16 / 9) < 1e-6:
            found.append(ex)
            if len(found) == n:
                break
    return found


def square_tiles(pipe: MobilePicassoPipeline) -> MobilePicassoPipeline:
    """The same weights planning ACPT with the set's square tiles (`SetInfo.fit_windows=False`)."""
    info = replace(pipe.models.info, fit_windows=False)
    pipe.models.info = pipe.models.upscaler.info = info
    return pipe


def pipelines(models: str) -> dict[str, MobilePicassoPipeline]:
    device = default_device()
    return {
        BASELINE: square_tiles(MobilePicassoPipeline.from_pretrained(models).to(device, torch.float32,
                                                                               channels_last=False)),
        "fp32": MobilePicassoPipeline.from_pretrained(models).to(device, torch.float32, channels_last=False),
        "fp32+channels_last": MobilePicassoPipeline.from_pretrained(models).to(device, torch.float32, channels_last=True),
        "auto": MobilePicassoPipeline.from_pretrained(models).to(device, "auto"),
    }


def run(out: Path, models: str = "mini", n: int = 3, size: tuple[int, int] = (3840, 2160),
        methods: tuple[str, ...] = DEVICE_METHODS) -> pd.DataFrame:
    pipes = pipelines(models)
    todo = scenes(n)
    for pipe in pipes.values():  # warm-up: no configuration pays for first-call setup
        pipe(todo[0].source(512, 288), todo[0].instruction, size=(512, 288))
    rows = []
    for ex in todo:
        source, target = ex.source(*size), np.asarray(ex.target(*size))
        for method in methods:
            for config, pipe in pipes.items():
                result = pipe(source, ex.instruction, method=method, size=size, seed=0)
                r = result.report
                rows.append({"seed": ex.seed, "family": ex.family, "instruction": ex.instruction, "method": method,
                             "config": config, "device": r.device, "dtype": r.dtype,
                             "upscale_dtype": r.upscale_dtype,
                             "size": f"{size[0]}x{size[1]}", "seconds": r.total_seconds,
                             "peak_memory_mib": r.peak_memory_bytes / 2**20,
                             "psnr": psnr(np.asarray(result.image), target),
                             "stages": json.dumps(r.stage_seconds)})
    runs = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "device_runs.csv", index=False, float_format="%.5g")
    summary = summarise(runs)
    summary.to_csv(out / "device_speed.csv", index=False)
    return summary


BUDGETS_MIB = (512, 1024, 2048, 4096)


def budgets(out: Path, models: str = "mini", size: tuple[int, int] = (3840, 2160),
            budgets_mib: tuple[int, ...] = BUDGETS_MIB) -> pd.DataFrame:
    pipe = MobilePicassoPipeline.from_pretrained(models)
    ex = scenes(1)[0]
    source = ex.source(*size)
    rows = []
    for mib in (None, *budgets_mib):
        r = pipe(source, ex.instruction, method="mobilepicasso-paper", size=size, seed=0,
                 memory_budget=None if mib is None else mib * 2**20).report
        plan = r.memory_plan or {}
        rows.append({"budget_mib": mib or "", "failed": r.failed, "failure_reason": r.failure_reason or "",
                     "working_mib": round(r.working_memory_bytes / 2**20, 1),
                     "peak_rss_mib": round(r.peak_memory_bytes / 2**20, 1),
                     "over_budget_x": round(r.working_memory_bytes / (mib * 2**20), 3) if mib else "",
                     "estimated_mib": round(plan.get("estimated_bytes", 0) / 2**20, 1) if plan else "",
                     "sr_window": plan.get("sr_window", ""), "sr_batch": plan.get("sr_batch", ""),
                     "decode_window": plan.get("decode_window", ""), "decode_batch": plan.get("decode_batch", ""),
                     "seconds": r.total_seconds, "limit_ratio": (r.tiling or {}).get("limit_ratio", "")})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "memory_budget.csv", index=False)
    return table


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, g in runs.groupby("method", sort=False):
        base = g[g["config"] == BASELINE].set_index("seed")
        for config, c in g.groupby("config", sort=False):
            c = c.set_index("seed")
            diff = (c["psnr"] - base["psnr"]).dropna()
            half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))) \
                if len(diff) > 1 and diff.std(ddof=1) > 0 else 0.0
            rows.append({"method": method, "config": config, "dtype": c["dtype"].iloc[0],
                         "upscale_dtype": c["upscale_dtype"].iloc[0], "n": len(c),
                         "median_s": round(c["seconds"].median(), 3),
                         "speedup_vs_before": round(base["seconds"].median() / c["seconds"].median(), 2),
                         "median_peak_mib": round(c["peak_memory_mib"].median(), 1),
                         "psnr": round(c["psnr"].mean(), 3), "psnr_diff_vs_before": round(diff.mean(), 3),
                         "ci_low": round(diff.mean() - half, 3), "ci_high": round(diff.mean() + half, 3)})
    return pd.DataFrame(rows)
