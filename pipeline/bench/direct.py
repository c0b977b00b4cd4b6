"""`python -m pipeline bench --suite direct`: ip2p-direct's time estimate, calibrated and checked.

edit() refuses ip2p-direct from one timed U-Net pass at the standard size, and FLOPs / that
throughput moved by 60x between two runs of the same 4K edit. Here, in one fresh worker process,
the edit U-Net's call (the CFG batch) is timed at several sizes; seconds per call is fitted
against exact FLOPs per call as a power law (a line in log-log), since throughput falls as the
attention grows; a direct edit's estimate is steps x the fitted seconds at its size. Direct edits
are then run for real at other sizes, each in its own process, and the estimate's ratio to the
measured edit call is the check (within 30% passes). Sizes beyond the largest pass are
extrapolations of the fit, and the table says so.

Time is CPU seconds of the process (one torch thread): the work itself, which on a machine
shared with other jobs moves far less than wall time, which stretches with the load (wall seconds are in
the table too). On an otherwise idle core the two agree.

direct_calibration.csv, one row per size, `kind`:
- `pass`: a timed call (measured seconds, FLOPs, the fit's seconds at that FLOP count);
- `check`: a measured direct edit (edit-stage seconds) against the calibrated estimate, and
  against edit()'s own single-pass estimate;
- `estimate`: a benchmark size where ip2p-direct is not run; the estimate the tables use.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.bench.runner import run_worker
from pipeline.bench.runs import bench_images, long_side, output_size

PASS_SIZES = ["256", "384", "640", "1024"]
CHECK_SIZES = ["448", "576"]  # between the passes: the checks test the fit, not an extrapolation
ESTIMATE_SIZES = ["1024", "2048", "4k"]
QUICK_PASS_SIZES = ["128", "192", "256"]
QUICK_CHECK_SIZES = ["160", "224"]
QUICK_ESTIMATE_SIZES = ["640"]
NO_BUDGET = 1e9  # seconds: a check run is never refused
TOLERANCE = 0.30  # |estimate / measured - 1| within this passes the check


def fit_power_law(flops: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """(exponent, log-intercept) of seconds = exp(c) * flops**exponent, least squares in log-log."""
    b, c = np.polyfit(np.log(np.asarray(flops, float)), np.log(np.asarray(seconds, float)), 1)
    return float(b), float(c)


def predict(fit: tuple[float, float], flops: float) -> float:
    b, c = fit
    return float(math.exp(c + b * math.log(flops)))


def run(out: Path, models: str, workdir: Path, *, quick: bool = False, steps: int | None = None,
        threads: int | None = 1, timeout: float | None = 900.0, measured_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Time the passes, run the checks, write and return direct_calibration.csv.

    `measured_runs`: the main suite's runs.csv, whose measured ip2p-direct rows become extra checks."""
    pass_sizes = QUICK_PASS_SIZES if quick else PASS_SIZES
    check_sizes = QUICK_CHECK_SIZES if quick else CHECK_SIZES
    estimate_sizes = QUICK_ESTIMATE_SIZES if quick else ESTIMATE_SIZES
    unit = run_worker("unit", {"kind": "passes", "models": models, "threads": threads,
                               "sizes": [output_size(s) for s in pass_sizes], "repeats": 1 if quick else 2},
                      timeout, workdir)
    if "passes" not in unit:
        raise RuntimeError(f"timing the U-Net passes failed: {unit.get('failure_reason')}")
    steps = steps or unit["steps"]
    passes = pd.DataFrame(unit["passes"]).assign(kind="pass", size=pass_sizes)
    fit = fit_power_law(passes["flops_per_call"], passes["cpu_seconds_per_call"])
    passes["fitted_seconds_per_call"] = [predict(fit, f) for f in passes["flops_per_call"]]

    image = bench_images(1)[0]
    checks = []
    for size in check_sizes:
        w, h = output_size(size)
        spec = {"method": "ip2p-direct", "size": size, "width": w, "height": h, "models": models, "quality": False,
                "time_budget": NO_BUDGET, "threads": threads, "steps": steps,
                "image": {"index": image.index, "seed": image.seed, "family": image.family,
                          "instruction": image.instruction}}
        r = run_worker("run", spec, timeout, workdir)
        rep = r.get("report") or {}
        checks.append({"kind": "check", "size": size, "source": "this suite", "status": r.get("status", "failed"),
                       "failure_reason": r.get("failure_reason"),
                       "measured_cpu_seconds": r.get("cpu_seconds", math.nan),
                       "measured_wall_seconds": rep.get("total_seconds", math.nan),
                       "single_pass_estimate_seconds": (r.get("estimate") or {}).get("seconds", math.nan)})
    if measured_runs is not None and "method" in measured_runs:
        ok = measured_runs[(measured_runs["method"] == "ip2p-direct") & (measured_runs["status"] == "ok")]
        for size, g in ok.groupby("size", sort=False):
            checks.append({"kind": "check", "size": str(size), "source": f"runs.csv (median of {len(g)})",
                           "status": "ok", "measured_cpu_seconds": g["cpu_seconds"].median() if "cpu_seconds" in g else math.nan,
                           "measured_wall_seconds": g["total_seconds"].median(),
                           "single_pass_estimate_seconds": g["estimated_seconds"].median()})
    rows = [*checks, *({"kind": "estimate", "size": s, "source": "extrapolated" if _beyond(s, pass_sizes) else
                        "interpolated"} for s in estimate_sizes)]
    table = pd.DataFrame(rows)
    table["passes_fitted"] = len(passes)
    calls = _calls(table["size"], models, steps, threads, timeout, workdir)
    table["width"], table["height"], table["tflops"] = calls["width"], calls["height"], calls["tflops"]
    table["estimated_seconds"] = [steps * predict(fit, t * 1e12 / steps) for t in table["tflops"]]
    table["estimate_over_measured"] = table["estimated_seconds"] / table["measured_cpu_seconds"]
    table["single_pass_over_measured"] = table["single_pass_estimate_seconds"] / table["measured_cpu_seconds"]
    table["within_30pct"] = np.where(table["kind"] == "check",
                                     (table["estimate_over_measured"] - 1).abs() <= TOLERANCE, None)
    table["fit_exponent"] = fit[0]
    table["steps"] = steps
    passes["tflops"] = passes["flops_per_call"] * steps / 1e12  # a whole edit's U-Net work at that size
    passes["fit_exponent"], passes["steps"], passes["source"] = fit[0], steps, "this suite"
    cols = ["kind", "size", "width", "height", "source", "status", "failure_reason", "steps", "tflops",
            "cpu_seconds_per_call", "wall_seconds_per_call", "fitted_seconds_per_call", "measured_cpu_seconds",
            "measured_wall_seconds", "estimated_seconds", "estimate_over_measured", "within_30pct",
            "single_pass_estimate_seconds", "single_pass_over_measured", "passes_fitted", "fit_exponent"]
    out_table = pd.concat([passes, table], ignore_index=True).reindex(columns=cols)
    out.mkdir(parents=True, exist_ok=True)
    out_table.to_csv(out / "direct_calibration.csv", index=False, float_format="%.5g")
    return out_table


def _beyond(size: str, pass_sizes: Sequence[str]) -> bool:
    return long_side(size) > max(map(long_side, pass_sizes))


def _calls(sizes: pd.Series, models: str, steps: int, threads: int | None, timeout: float | None,
           workdir: Path) -> pd.DataFrame:
    """Direct-edit size and U-Net TFLOPs (steps x CFG batch) at each output size, counted on the meta device."""
    unit = run_worker("unit", {"kind": "direct", "models": models, "threads": threads, "steps": steps,
                               "sizes": [output_size(s) for s in sizes]}, timeout, workdir)
    if "estimates" not in unit:
        raise RuntimeError(f"counting ip2p-direct's FLOPs failed: {unit.get('failure_reason')}")
    rows = []
    for s in sizes:
        w, h = output_size(s)
        est = unit["estimates"][f"{w}x{h}"]
        rows.append({"width": w, "height": h, "tflops": est["tflops"]})
    return pd.DataFrame(rows, index=sizes.index)


def calibrated_seconds(cal: pd.DataFrame | None, size: str) -> float:
    """The calibrated estimate for an output size (NaN when the table has none)."""
    if cal is None or cal.empty:
        return math.nan
    rows = cal[(cal["kind"] != "pass") & (cal["size"].astype(str) == str(size))]
    return float(rows["estimated_seconds"].iloc[0]) if len(rows) else math.nan


def summary(cal: pd.DataFrame) -> str:
    """One printable line per check."""
    checks = cal[cal["kind"] == "check"]
    return "\n".join(f"{r.size} ({r.source}): estimate {r.estimated_seconds:.1f} CPU s, measured "
                     f"{r.measured_cpu_seconds:.1f} CPU s ({r.measured_wall_seconds:.1f} s wall), ratio {r.estimate_over_measured:.2f}"
                     f" ({'within' if r.within_30pct else 'NOT within'} 30%); edit()'s single-pass estimate ratio "
                     f"{r.single_pass_over_measured:.2f}" for r in checks.itertuples())
