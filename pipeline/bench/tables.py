"""From worker results to the tables: one row per run, cost and quality per cell, the headline.

Definitions (repeated in results/README.md):
- time: a run's `total_seconds` (the edit call, models already loaded); a cell reports the median
  and the min/max over its runs.
- speed-up: median time of the baseline / median time of `mobilepicasso`, same size, same run; time
  is the edit call's CPU seconds (one torch thread: the work, which other load on a shared machine
  stretches far less than wall time) where measured, else wall seconds. Where a baseline was not run, its time is
  the derived estimate (marked "derived"; `derived_from` says how).
- memory: peak memory (process VmHWM, reset per run; model weights included) of `mobilepicasso`
  relative to the baseline: 100 * (mobilepicasso / baseline - 1) percent, medians.
- every comparison is paired by test image (the same images for both methods, n of them): the
  difference of means in the metric's unit with a 95% Student-t CI (`metrics.paired_difference`),
  and the relative difference with a percentile-bootstrap CI (`metrics.relative_difference`).
- quality +x%: the relative difference (100 * (mean_mp / mean_baseline - 1)) of PSNR to the ground
  truth; positive = mobilepicasso better.
- hallucination -y%: the same of the detector M's artifact ratio; negative = mobilepicasso better.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.bench.metrics import paired_difference, relative_difference

REFERENCE = "mobilepicasso"
QUALITY_METRICS = {  # column: (label, higher is better)
    "psnr": ("PSNR (dB)", True),
    "ssim": ("SSIM", True),
    "psnr_unedited": ("PSNR unedited region (dB)", True),
    "edit_mae": ("edit-region MAE (0-255)", False),
    "artifact_ratio": ("artifact ratio (M, p>0.5)", False),
    "artifact_prob": ("mean artifact probability (M)", False),
    "lr_consistency": ("LR-consistency (dB)", True),
    "brisque": ("BRISQUE (crop)", False),
    "seam_ratio": ("seam visibility (1 = none)", False),
    "seam_ratio_acpt_grid": ("seam visibility at ACPT lines", False),
}
HEADLINE_QUALITY = "psnr"
HEADLINE_HALLUCINATION = "artifact_ratio"


def run_rows(results: Sequence[dict]) -> pd.DataFrame:
    """One flat row per run."""
    rows = []
    for r in results:
        run = r.get("run", {})
        rep = r.get("report") or {}
        image = run.get("image", {})
        row = {
            "method": run.get("method"), "size": run.get("size"), "width": run.get("width"), "height": run.get("height"),
            "image": image.get("index"), "seed": image.get("seed"), "family": image.get("family"),
            "status": r.get("status", "failed"), "failure_reason": r.get("failure_reason"),
            "model_set": rep.get("model_set", run.get("models")), "trained": rep.get("model_set_trained"),
            "total_seconds": rep.get("total_seconds") if r.get("status") == "ok" else math.nan,
            "cpu_seconds": r.get("cpu_seconds", math.nan) if r.get("status") == "ok" else math.nan,
            "peak_memory_mib": rep["peak_memory_bytes"] / 2**20 if rep.get("peak_memory_bytes") and r.get("status") == "ok" else math.nan,
        }
        for stage, sec in (rep.get("stage_seconds") or {}).items():
            row[f"{stage}_seconds"] = sec
        evals = rep.get("unet_evaluations") or {}
        row["unet_evals_edit"] = evals.get("edit", 0)
        row["unet_evals_upscale"] = evals.get("upscale", 0)
        row["unet_evals"] = sum(evals.values()) if evals else (math.nan if rep.get("failed") or not rep else 0)
        expected = r.get("expected_unet_evaluations")
        row["unet_evals_expected"] = sum(expected.values()) if expected is not None else math.nan
        row["unet_evals_match"] = (expected == evals) if expected is not None else None
        flops = rep.get("unet_flops") or {}
        row["unet_gflops"] = sum(flops.values()) / 1e9 if flops else math.nan
        row["other_gflops"] = sum((r.get("other_flops") or {}).values()) / 1e9 if r.get("other_flops") else 0.0
        tiling = rep.get("tiling") or {}
        row.update(tiling_mode=tiling.get("mode"), tile=tiling.get("tile"), halo=tiling.get("halo"),
                   tiles=tiling.get("tiles"), limit_ratio=tiling.get("limit_ratio"))
        derived = r.get("derived") or {}
        row["derived_seconds"] = derived.get("total_seconds", math.nan)
        row["derived_unet_gflops"] = derived.get("unet_flops", math.nan) / 1e9 if derived else math.nan
        edit_size = rep.get("edit_size") or (math.nan, math.nan)
        row["edit_w"], row["edit_h"] = edit_size
        est = r.get("estimate") or {}
        row["estimated_seconds"] = est.get("seconds", math.nan)
        row["threads"] = r.get("threads")
        row["weights"] = r.get("weights_fingerprint")
        row["output_sha256"] = r.get("output_sha256")
        row["worker_seconds"] = r.get("worker_seconds")
        row.update(r.get("quality") or {})
        rows.append(row)
    return pd.DataFrame(rows)


def _first(series: pd.Series):
    s = series.dropna()
    return s.iloc[0] if len(s) else None


def _patches(width: int, height: int, patch: int) -> int:
    return math.ceil(width / patch) * math.ceil(height / patch)


def _time(row) -> float:
    """A cell's time for the ratios: CPU seconds where measured (the work, far steadier under other load on a
    shared machine), else wall seconds."""
    cpu = row.get("cpu_seconds_median", math.nan)
    return cpu if cpu is not None and np.isfinite(cpu) else row["seconds_median"]


def _patchwise_derived(size: str, source: dict | None, runs: pd.DataFrame) -> dict | None:
    """ip2p-patchwise at `size`, not run: the measured cell `source` x the patch-count ratio (its work
    is exactly one standard-resolution edit per patch)."""
    from pipeline.bench.runs import output_size

    if source is None or source["status"] == "failed":
        return None
    ok = runs[(runs["method"] == "ip2p-patchwise") & (runs["size"] == source["size"]) & (runs["status"] == "ok")]
    p = int(ok["edit_w"].iloc[0])  # each patch is edited at p x p
    w, h = output_size(size)
    k = _patches(w, h, p) / _patches(int(source["width"]), int(source["height"]), p)
    return {"size": size, "method": "ip2p-patchwise", "width": w, "height": h, "runs": 0, "ok": 0, "status": "derived",
            "failure_reason": f"not run: {source['size']}'s measured cost x {k:.3g} (patch-count ratio)",
            "derived_from": f"{source['size']} x patch-count ratio",
            "seconds_median": math.nan, "cpu_seconds_median": math.nan,
            "derived_seconds": _time(source) * k,
            "unet_evals": source["unet_evals"] * k, "unet_gflops": math.nan,
            "derived_unet_gflops": source["unet_gflops"] * k, "other_gflops": 0.0, "tiles": source["tiles"] * k}


def cost_table(runs: pd.DataFrame, methods: Sequence[str], sizes: Sequence[str],
               derive: dict[tuple[str, str], str] | None = None,
               direct_estimates: dict[str, float] | None = None) -> pd.DataFrame:
    """Per (size, method): time (median, min, max), stage medians, peak memory, U-Net work, tiles,
    and the ratios against mobilepicasso at the same size. `derive`: ip2p-patchwise cells costed
    from a measured size instead of run. `direct_estimates`: size -> calibrated seconds of an
    ip2p-direct edit (direct_calibration.csv), the derived time of a refused ip2p-direct cell; without
    it the derived time is edit()'s own single-pass estimate, and `derived_from` says which."""
    stage_cols = [c for c in runs.columns if c.endswith("_seconds") and c not in ("total_seconds", "derived_seconds", "worker_seconds")]
    measured: dict[tuple[str, str], dict] = {}
    for size in sizes:
        for method in methods:
            cell = runs[(runs["method"] == method) & (runs["size"] == size)]
            if cell.empty:
                continue
            ok = cell[cell["status"] == "ok"]
            row = {"size": size, "method": method, "width": cell["width"].iloc[0], "height": cell["height"].iloc[0],
                   "runs": len(cell), "ok": len(ok),
                   "status": "ok" if len(ok) == len(cell) else ("failed" if ok.empty else "partial"),
                   "failure_reason": _first(cell["failure_reason"])}
            t = ok["total_seconds"]
            row.update(seconds_median=t.median(), seconds_min=t.min(), seconds_max=t.max())
            row["cpu_seconds_median"] = ok["cpu_seconds"].median() if "cpu_seconds" in ok else math.nan
            for c in stage_cols:
                if c in ok and ok[c].notna().any():
                    row[f"{c[:-8]}_s_median"] = ok[c].median()
            m = ok["peak_memory_mib"]
            row.update(peak_mib_median=m.median(), peak_mib_min=m.min(), peak_mib_max=m.max())
            row["unet_evals"] = _first(ok["unet_evals"])
            row["unet_evals_constant"] = bool(ok["unet_evals"].nunique() <= 1) if len(ok) else None
            row["unet_evals_match_planner"] = bool(ok["unet_evals_match"].all()) if len(ok) else None
            row["unet_gflops"] = _first(ok["unet_gflops"])
            row["other_gflops"] = _first(ok["other_gflops"])
            row["tiles"] = _first(ok["tiles"]) if "tiles" in ok else None
            row["limit_ratio"] = _first(ok["limit_ratio"]) if "limit_ratio" in ok else None
            row["derived_seconds"] = cell["derived_seconds"].median() if cell["derived_seconds"].notna().any() else math.nan
            row["derived_from"] = "edit()'s single-pass estimate" if np.isfinite(row["derived_seconds"]) else None
            calibrated = (direct_estimates or {}).get(size, math.nan)
            if method == "ip2p-direct" and ok.empty and np.isfinite(calibrated):
                row["derived_seconds"], row["derived_from"] = calibrated, "direct_calibration.csv"
            row["derived_unet_gflops"] = _first(cell["derived_unet_gflops"])
            measured[(method, size)] = row
    for (method, size), source in (derive or {}).items():
        if method == "ip2p-patchwise" and method in methods and size in sizes:
            row = _patchwise_derived(size, measured.get((method, source)), runs)
            if row is not None:
                measured[(method, size)] = row
    order = {(m, s): (i, j) for i, s in enumerate(sizes) for j, m in enumerate(methods)}
    table = pd.DataFrame([measured[k] for k in sorted(measured, key=order.get)])
    if table.empty:
        return table
    speed, speed_src, mem = [], [], []
    for _, row in table.iterrows():
        ref = table[(table["size"] == row["size"]) & (table["method"] == REFERENCE)]
        ref_t = _time(ref.iloc[0]) if len(ref) else math.nan
        ref_m = ref["peak_mib_median"].iloc[0] if len(ref) else math.nan
        t, src = _time(row), "measured"
        if not np.isfinite(t) and np.isfinite(row["derived_seconds"]):
            t, src = row["derived_seconds"], "derived"
        speed.append(t / ref_t if np.isfinite(t) and ref_t > 0 else math.nan)
        speed_src.append(src if np.isfinite(t) else None)
        mem.append(100 * (ref_m / row["peak_mib_median"] - 1) if np.isfinite(row["peak_mib_median"]) and np.isfinite(ref_m) else math.nan)
    table["speedup_x"] = speed
    table["speedup_source"] = speed_src
    table["mp_memory_vs_this_pct"] = mem
    return table


def common_images(runs: pd.DataFrame, size: str, methods: Sequence[str] | None = None) -> list[int]:
    """Test images on which every method with a quality row at `size` has one: the paired set."""
    ok = runs[(runs["size"] == size) & (runs["status"] == "ok")]
    if "psnr" not in ok:
        return []
    ok = ok[ok["psnr"].notna() & (ok["method"].isin(methods) if methods is not None else True)]
    sets = [set(g["image"]) for _, g in ok.groupby("method")]
    return sorted(set.intersection(*sets)) if sets else []


def quality_table(runs: pd.DataFrame, methods: Sequence[str], sizes: Sequence[str]) -> pd.DataFrame:
    """Per (size, method): mean (and sd) of each quality metric over the common test images of that
    size (every method on the same images, `images` of them, listed in `image_ids`)."""
    rows = []
    for size in sizes:
        common = common_images(runs, size, methods)
        for method in methods:
            cell = runs[(runs["method"] == method) & (runs["size"] == size) & (runs["status"] == "ok")
                        & runs["image"].isin(common)]
            if cell.empty or "psnr" not in cell:
                continue
            row = {"size": size, "method": method, "images": len(cell),
                   "image_ids": ";".join(str(int(i)) for i in sorted(cell["image"]))}
            for col in QUALITY_METRICS:
                if col in cell and cell[col].notna().any():
                    row[col] = cell[col].mean()
                    row[f"{col}_sd"] = cell[col].std(ddof=1) if cell[col].notna().sum() > 1 else math.nan
            if "brisque_target" in cell:
                row["brisque_ground_truth"] = cell["brisque_target"].mean()
            rows.append(row)
    return pd.DataFrame(rows)


def identical_outputs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (size, pair of methods): on how many of their common test images the outputs were
    byte-identical (same pixels, `output_sha256`). Only pairs identical at least once are listed."""
    if "output_sha256" not in runs:
        return pd.DataFrame(columns=["size", "method_a", "method_b", "images_compared", "images_identical"])
    ok = runs[(runs["status"] == "ok") & runs["output_sha256"].notna()]
    rows = []
    for size, g in ok.groupby("size", sort=False):
        by_method = {m: d.set_index("image")["output_sha256"] for m, d in g.groupby("method", sort=False)}
        names = list(dict.fromkeys(g["method"]))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                common = by_method[a].index.intersection(by_method[b].index)
                same = int((by_method[a].loc[common] == by_method[b].loc[common]).sum())
                if same:
                    rows.append({"size": size, "method_a": a, "method_b": b, "images_compared": len(common),
                                 "images_identical": same})
    return pd.DataFrame(rows, columns=["size", "method_a", "method_b", "images_compared", "images_identical"])


def paired(runs: pd.DataFrame, size: str, method: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """mobilepicasso's and `method`'s values of `column` on the test images both have."""
    def values(m):
        cell = runs[(runs["method"] == m) & (runs["size"] == size) & (runs["status"] == "ok")]
        return cell.set_index("image")[column] if column in cell else pd.Series(dtype=float)

    ours, base = values(REFERENCE), values(method)
    common = ours.index.intersection(base.index)
    return ours.loc[common].to_numpy(float), base.loc[common].to_numpy(float)


def headline_table(runs: pd.DataFrame, cost: pd.DataFrame, methods: Sequence[str], sizes: Sequence[str],
                   n_boot: int = 2000) -> pd.DataFrame:
    """Per (size, baseline): speed-up, memory, and quality/hallucination relative differences with CIs."""
    rows = []
    for size in sizes:
        for method in methods:
            if method == REFERENCE:
                continue
            c = cost[(cost["size"] == size) & (cost["method"] == method)] if not cost.empty else cost
            if c.empty:
                continue
            c = c.iloc[0]
            row = {"size": size, "baseline": method, "baseline_status": c["status"],
                   "speedup_x": c["speedup_x"], "speedup_source": c["speedup_source"],
                   "mp_memory_vs_baseline_pct": c["mp_memory_vs_this_pct"]}
            for col in QUALITY_METRICS:
                if col not in runs or col.startswith("seam"):
                    continue
                ours, base = paired(runs, size, method, col)
                d = relative_difference(ours, base, n_boot=n_boot)
                diff = paired_difference(ours, base)
                key = {"psnr": "quality", "artifact_ratio": "hallucination"}.get(col, col)
                row[f"{key}_images"] = d.n_images
                row[f"{key}_diff"] = diff.mean
                row[f"{key}_diff_ci_low"] = diff.low
                row[f"{key}_diff_ci_high"] = diff.high
                row[f"{key}_pct"] = d.estimate
                row[f"{key}_ci_low"] = d.low
                row[f"{key}_ci_high"] = d.high
            rows.append(row)
    return pd.DataFrame(rows)


def fmt(x, digits: int = 2, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}{suffix}"


def markdown(df: pd.DataFrame) -> str:
    """A plain GitHub-markdown table (no tabulate dependency)."""
    if df.empty:
        return "(no rows)\n"
    cols = list(df.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return str(v)

    for _, r in df.iterrows():
        out.append("| " + " | ".join(cell(v) for v in r.tolist()) + " |")
    return "\n".join(out) + "\n"


def times(x: float) -> str:
    """A ratio as "342x", "3.2x" or "0.27x" (two significant digits below 10)."""
    return f"{x:.0f}x" if x >= 10 else (f"{x:.1f}x" if x >= 1 else f"{x:.2f}x")


def headline_markdown(head: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    """The human table: one row per (size, baseline); every quality cell is paired (n images)."""
    rows = []
    for _, h in head.iterrows():
        speed = "—" if not np.isfinite(h["speedup_x"]) else times(h["speedup_x"]) + (" (derived)" if h["speedup_source"] == "derived" else "")

        def diff(key: str, digits: int) -> str:
            if f"{key}_diff" not in h or not np.isfinite(h[f"{key}_diff"]):
                return "n/a"
            f = f"{{:+.{digits}f}}"
            ci = (f" [{f.format(h[f'{key}_diff_ci_low'])}, {f.format(h[f'{key}_diff_ci_high'])}]"
                  if np.isfinite(h[f"{key}_diff_ci_low"]) else " (no CI)")
            return f.format(h[f"{key}_diff"]) + ci

        def rel(key: str) -> str:
            if f"{key}_pct" not in h or not np.isfinite(h[f"{key}_pct"]):
                return "n/a"
            if h.get(f"{key}_images", 0) < 2:
                return f"{h[f'{key}_pct']:+.1f}% (no CI)"
            return f"{h[f'{key}_pct']:+.1f}% [{h[f'{key}_ci_low']:+.1f}, {h[f'{key}_ci_high']:+.1f}]"

        mem = h["mp_memory_vs_baseline_pct"]
        n = h.get("quality_images", 0)
        rows.append({
            "size": h["size"], "baseline": h["baseline"],
            "speed-up of mobilepicasso": speed,
            "mobilepicasso memory vs baseline": "—" if not np.isfinite(mem) else f"{mem:+.0f}%",
            "n (paired images)": int(n) if np.isfinite(n) else 0,
            "PSNR difference, dB [95% CI]": diff("quality", 2),
            "quality (PSNR) +x% [95% CI]": rel("quality"),
            "artifact-ratio difference [95% CI]": diff("hallucination", 4),
            "hallucination (artifact ratio) -y% [95% CI]": rel("hallucination"),
        })
    return pd.DataFrame(rows)
