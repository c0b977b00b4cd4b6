"""Generate `results/README.md` from the CSVs and `meta.json` of the suites next to it. Never hand-edit it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pipeline.bench.tables import QUALITY_METRICS, headline_markdown, markdown, times

def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _num(x, digits=2, suffix=""):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(x) else f"{x:.{digits}f}{suffix}"


def _meta(folder: Path) -> dict:
    p = folder / "meta.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _provenance(meta: dict) -> list[str]:
    m = meta
    if m.get("suite") == "tiles":
        trained = "trained" if m.get("model_set_trained") else "random weights: the costs are real, the outputs are not"
    else:
        trained = "trained" if m.get("model_set_trained") else "**UNTRAINED (random weights): quality numbers are not meaningful**"
    return [
        f"- command: `{m.get('command')}`",
        f"- run {m.get('finished')} UTC, wall time {_num(m.get('wall_seconds', math.nan) / 60, 1)} min; "
        f"model set `{m.get('models')}` ({trained}); torch {m.get('torch')}, {m.get('threads')} CPU threads per worker, "
        f"{m.get('cpus')} CPU cores shared with other work (timings are comparable within a run only)",
    ]


def _span(values: pd.Series, fmt: str) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    return fmt.format(v.min()) if len(v) == 1 or v.min() == v.max() else f"{fmt.format(v.min())} to {fmt.format(v.max())}"


def paper_form(head: pd.DataFrame) -> list[str]:
    """One line per claim, ranges over baselines (and sizes), straight from headline.csv."""
    out = []
    sp = head[head["speedup_source"] == "measured"]
    dv = head[head["speedup_source"] == "derived"]
    if not sp.empty:
        best = sp.loc[sp["speedup_x"].idxmax()]
        lo, hi = sp["speedup_x"].min(), sp["speedup_x"].max()
        out.append(f"- speed-up, measured: {times(lo)} to {times(hi)} (best: against {best['baseline']} at "
                   f"{best['size']}; below 1x = mobilepicasso slower)")
    if not dv.empty:
        best = dv.loc[dv["speedup_x"].idxmax()]
        out.append(f"- speed-up, derived (baseline not run: estimated time): up to "
                   f"{times(best['speedup_x'])} against {best['baseline']} at {best['size']}")
    out.append(f"- memory of mobilepicasso relative to the baselines it was measured against: "
               f"{_span(head['mp_memory_vs_baseline_pct'], '{:+.0f}%')}")
    for key, name in (("quality", "quality (PSNR to ground truth)"), ("hallucination", "hallucination (artifact ratio, M)"),
                      ("artifact_prob", "hallucination (mean artifact probability, M)")):
        col = f"{key}_pct"
        if col in head and head[col].notna().any():
            parts = [f"{size}: {_span(g[col], '{:+.1f}%')}" for size, g in head.groupby("size", sort=False) if g[col].notna().any()]
            out.append(f"- {name}, range over baselines: " + "; ".join(parts))
    return out


def bench_section(folder: Path, rel: str) -> list[str]:
    meta = _meta(folder)
    cost, quality, head = (_read(folder / f) for f in ("cost.csv", "quality.csv", "headline.csv"))
    if cost is None:
        return []
    at = f" ({rel}: {', '.join(map(str, meta.get('sizes', [])))})"
    lines = [f"## Headline{at}: mobilepicasso against each baseline", ""] + _provenance(meta) + [""]
    if head is not None and not head.empty:
        lines += ["In the paper's form (its claims: up to 55.8x faster, +9% memory, quality +18-48%, "
                  "hallucination -14-51%, the last two from a user study):", ""] + paper_form(head) + [""]
        lines += [markdown(headline_markdown(head, cost)), ""]
    lines += [
        "How to read it: *speed-up* = baseline's median time / mobilepicasso's median time at the same size "
        "(\"derived\": the baseline not run, its time derived as the cost table's `derived_from` says: ip2p-direct's "
        "from its calibrated estimate, ip2p-patchwise's from a measured size x the patch-count ratio). *memory* = mobilepicasso's peak memory relative to the baseline's "
        "(the paper's \"a mere 9% increase\" reads +9% here). *quality +x%* and *hallucination -y%*: see Definitions.",
        "",
        f"## Cost per method and size{at}", "",
        f"![cost]({rel}/cost.png)", "", f"![stages]({rel}/stages.png)", "",
    ]
    mp = cost[(cost["method"] == "mobilepicasso") & (cost["status"] == "ok")]
    if not mp.empty:
        big = mp.iloc[-1]
        stages = {c[:-9]: big[c] for c in cost.columns if c.endswith("_s_median") and pd.notna(big[c])}
        total = sum(stages.values())
        if total > 0:
            lines += [f"Where mobilepicasso's time goes at {big['size']} (stage medians): " + ", ".join(
                f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in stages.items()) + ".", ""]
    show = cost[["size", "method", "status", "runs", "cpu_seconds_median", "seconds_median", "seconds_min", "seconds_max",
                 "peak_mib_median",
                 "unet_evals", "unet_gflops", "other_gflops", "tiles", "limit_ratio", "derived_seconds", "speedup_x",
                 "mp_memory_vs_this_pct"]].copy()
    for c in ("cpu_seconds_median", "seconds_median", "seconds_min", "seconds_max", "derived_seconds", "speedup_x"):
        show[c] = show[c].map(lambda v: _num(v, 2))
    for c in ("peak_mib_median", "unet_gflops", "other_gflops", "mp_memory_vs_this_pct"):
        show[c] = show[c].map(lambda v: _num(v, 0))
    show["limit_ratio"] = show["limit_ratio"].map(lambda v: _num(v, 2))
    show["tiles"] = show["tiles"].map(lambda v: _num(v, 0))
    show["unet_evals"] = show["unet_evals"].map(lambda v: _num(v, 0))
    lines += [markdown(show), ""]
    lines += direct_section(folder, at)
    failed = cost[cost["status"] != "ok"]
    if not failed.empty:
        lines += ["Failures (rows, not crashes):", ""]
        lines += [f"- {r.method} at {r.size}: {r.failure_reason}" for r in failed.itertuples()] + [""]
    if "unet_evals_match_planner" in cost:
        bad = cost[(cost["status"] != "failed") & (cost["unet_evals_match_planner"] == False)]  # noqa: E712
        lines += [("U-Net evaluation counts equal the planner's formula (steps x CFG batch, + upscaler steps x tiles) "
                   "in every run." if bad.empty else f"U-Net counts differ from the planner's formula in: "
                   f"{', '.join(f'{r.method}@{r.size}' for r in bad.itertuples())}."), ""]
    if "derived_from" in cost and cost["derived_from"].notna().any():
        lines += ["Derived times: " + "; ".join(f"{r.method} at {r.size} from {r.derived_from}"
                                                 for r in cost[cost["derived_from"].notna() & (cost["status"] != "ok")]
                                                 .itertuples()) + ".", ""]
    lines += identical_section(folder, at)
    if quality is not None and not quality.empty:
        counts = quality.groupby("size", sort=False)["images"].agg(["min", "max"])
        lines += [f"## Quality on the SynthEdit test split{at}", "",
                  "Every method ran on the same test images at each size (" + ", ".join(
                      f"{k}: {r['min']}" if r["min"] == r["max"] else f"{k}: {r['min']}-{r['max']} (UNPAIRED)"
                      for k, r in counts.iterrows()) + " images); the plot shows only paired differences against "
                  "mobilepicasso with 95% CIs, the table the means over those common images.", "",
                  f"![quality]({rel}/quality.png)", ""]
        cols = ["size", "method", "images"] + [c for c in QUALITY_METRICS if c in quality and not c.startswith("seam")]
        q = quality[cols].copy()
        for c in cols[3:]:
            q[c] = q[c].map(lambda v: _num(v, 3 if c in ("ssim", "artifact_ratio", "artifact_prob") else 2))
        lines += [markdown(q), ""]
        if "brisque_ground_truth" in quality:
            lines += [f"BRISQUE of the ground truth on the same crops: {_num(quality['brisque_ground_truth'].mean(), 1)} "
                      "(mean over all rows): BRISQUE's model of natural photos scores these flat synthetic scenes as "
                      "unnatural, so read it as a sharpness/texture proxy only.", ""]
        if "seam_ratio" in quality:
            lines += [f"## Seam visibility{at}", "", f"![seams]({rel}/seams.png)", ""]
            s = quality[["size", "method"] + [c for c in ("seam_ratio", "seam_ratio_acpt_grid") if c in quality]].copy()
            for c in s.columns[2:]:
                s[c] = s[c].map(lambda v: _num(v, 3))
            lines += [markdown(s), "",
                      "`seam_ratio`: mean |difference| between neighbouring pixels across the method's own tile "
                      "boundaries (ACPT/naive: core edges; overlap: window edges; patchwise: patch edges), divided by "
                      "the same at comparable positions elsewhere along the same axis: the other latent-pixel edges "
                      "(multiples of 8 px) for the latent-tiled methods, every other column/row for patchwise; "
                      "1.0 = boundaries invisible, mean over test images. `seam_ratio_acpt_grid`: the same at "
                      "mobilepicasso's core edges for every method, a control: untiled methods show how far from 1.0 "
                      "content alone moves it (bicubic and Real-ESRGAN outputs carry their own interpolation grid, "
                      "which can fall on these lines).", ""]
    notes = meta.get("notes") or []
    if notes:
        lines += [f"## What ran and what did not{at}", ""] + [f"- {n}" for n in notes] + [""]
    return lines


def direct_section(folder: Path, at: str = "") -> list[str]:
    """ip2p-direct's calibrated time estimate: the fit, the checks, the sizes it is used at (shown in the
    folder the direct suite ran in, the one with direct_meta.json)."""
    cal = _read(folder / "direct_calibration.csv")
    if cal is None or cal.empty or not (folder / "direct_meta.json").is_file():
        return []
    meta = json.loads((folder / "direct_meta.json").read_text())
    passes, rest = cal[cal["kind"] == "pass"], cal[cal["kind"] != "pass"]
    lines = [f"## ip2p-direct's time estimate, calibrated{at}", ""]
    if meta:
        lines += [f"- command: `{meta.get('command')}`, run {meta.get('finished')} UTC, "
                  f"{meta.get('threads')} CPU thread(s), {meta.get('cpus')} cores shared with other work", ""]
    lines += [f"CPU seconds per U-Net call (the CFG batch, one thread) measured in one fresh process at {len(passes)} sizes "
              f"({', '.join(map(str, passes['size']))}) and fitted as a power law of the call's FLOPs (exponent "
              f"{_num(passes['fit_exponent'].iloc[0], 3)}); an edit's estimate is steps x the fitted call time. "
              "Checks: direct edits measured at other sizes (CPU seconds of the edit call; wall seconds beside them, "
              "stretched by other load on this shared machine), each in its own process; within 30% passes. "
              "`single_pass_over_measured`: the same ratio for edit()'s own estimate (one pass at the standard size), "
              "which decides the refusal.", ""]
    show = rest[["kind", "size", "width", "height", "source", "tflops", "measured_cpu_seconds", "measured_wall_seconds",
                 "estimated_seconds",
                 "estimate_over_measured", "within_30pct", "single_pass_estimate_seconds",
                 "single_pass_over_measured"]].copy()
    for c, d in (("tflops", 2), ("measured_cpu_seconds", 1), ("measured_wall_seconds", 1), ("estimated_seconds", 1), ("estimate_over_measured", 2),
                 ("single_pass_estimate_seconds", 1), ("single_pass_over_measured", 2)):
        show[c] = show[c].map(lambda v, d=d: _num(v, d))
    show["within_30pct"] = show["within_30pct"].fillna("")
    return lines + [markdown(show), ""]


def identical_section(folder: Path, at: str = "") -> list[str]:
    same = _read(folder / "identical_outputs.csv")
    if same is None:
        return []
    lines = [f"## Byte-identical outputs{at}", ""]
    if same.empty:
        return lines + ["No two methods produced byte-identical outputs (same pixels) on any test image.", ""]
    lines += ["Pairs of methods whose outputs had the same pixels (SHA-256 of size and RGB values) on the same test "
              "image; their comparisons measure no difference between them:", ""]
    return lines + [f"- {r.size}: {r.method_a} = {r.method_b} on {r.images_identical} of {r.images_compared} images"
                    for r in same.itertuples()] + [""]


def tiles_section(folder: Path, rel: str) -> list[str]:
    meta = _meta(folder)
    limits, costs, choice, derived = (_read(folder / f) for f in ("limit_ratio.csv", "tile_cost.csv", "tile_choice.csv", "derived_cost.csv"))
    if limits is None:
        return []
    lines = ["## Tiling", ""] + _provenance(meta) + ["",
             f"![limit ratio]({rel}/limit_ratio.png)", "",
             "Limit ratio = latent pixels the U-Net evaluates / output latent pixels (1.0 = one pass, no overlap), "
             "at the set's default tile:", ""]
    d = limits[limits["default_tile"]][["size", "what", "tile", "halo", "grid", "tiles", "limit_ratio", "output_overlap"]].copy()
    d["limit_ratio"] = d["limit_ratio"].map(lambda v: _num(v, 3))
    d["output_overlap"] = d["output_overlap"].map(lambda v: _num(v, 2))
    lines += [markdown(d), ""]
    if costs is not None:
        lines += ["Per-tile cost against tile size (the paper's Figure 1 b/c on this CPU):", "",
                  f"![tile cost]({rel}/tile_cost.png)", ""]
        c = costs.copy()
        for col, dg in (("seconds_per_tile", 4), ("peak_mib", 1), ("gflops_per_tile", 2), ("us_per_latent_px", 2)):
            c[col] = c[col].map(lambda v, dg=dg: _num(v, dg))
        lines += [markdown(c), ""]
    if choice is not None and not choice.empty:
        lines += ["Tile size ACPT picks (`choose_tile_size`: fewest tiles x per-tile latency within the budget):", ""]
        ch = choice.copy()
        for col in ("limit_ratio", "upscale_seconds_est", "peak_mib"):
            if col in ch:
                ch[col] = ch[col].map(lambda v: _num(v, 2))
        lines += [markdown(ch), ""]
    if derived is not None:
        lines += ["Full-image cost derived from tile counts x measured per-tile cost (and edit evaluations x measured "
                  "per-evaluation cost, decode tiles x measured per-decode-tile cost), next to measured runs where "
                  "they fit:", "", f"![derived cost]({rel}/derived_cost.png)", ""]
        derived = derived.assign(unet_tflops_derived=derived["unet_gflops_derived"] / 1e3)
        cols = ["size", "method", "tile", "tiles", "upscale_evals", "edit_s_derived", "upscale_s_derived", "decode_s_derived",
                "total_s_derived", "total_s_measured", "unet_tflops_derived", "why_not_measured"]
        dd = derived[[c for c in cols if c in derived]].copy()
        for col in cols[5:11]:
            if col in dd:
                dd[col] = dd[col].map(lambda v: _num(v, 1))
        for col in ("tile", "tiles", "upscale_evals"):
            dd[col] = dd[col].map(lambda v: _num(v, 0))
        dd["why_not_measured"] = dd["why_not_measured"].fillna("")
        lines += [markdown(dd), ""]
        direct = derived[derived["method"] == "ip2p-direct"]
        if not direct.empty and "mobilepicasso_speedup_x" in direct:
            lines += ["ip2p-direct (one edit at the output size; edit stage only, from exact FLOPs / the U-Net "
                      "throughput of one pass at the standard size: edit()'s uncalibrated estimate, see the calibrated "
                      "one above) against mobilepicasso-paper's derived total: " + "; ".join(
                          f"{r.size}: {times(r.mobilepicasso_speedup_x)}" for r in direct.itertuples()
                          if pd.notna(r.mobilepicasso_speedup_x)) + ".", ""]
    notes = meta.get("notes") or []
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    return lines


DEFINITIONS = """## Definitions

- **Runs.** Every (method, output size) cell runs one edit per test image, each in its own process
  (`python -m pipeline.bench.worker`), so peak memory is that run's alone. Runs are ordered
  round-robin over cells so a change of machine load spreads over all methods. Cost is content-
  independent for every method (fixed steps and tile plans; the U-Net counts confirm it), so the
  runs of a cell are its timing repeats.
- **Time**: `EditReport.total_seconds` of the edit call (models already loaded); median and min/max
  over the cell's runs. **Peak memory**: the process's resident-set high-water mark (VmHWM), reset
  at the start of the edit, model weights included. **U-Net evaluations**: one per sample in a batch;
  **U-Net FLOPs** counted by `torch.utils.flop_counter` (other networks: Real-ESRGAN's FLOPs are
  listed separately as `other_gflops`; VAE decodes are not counted).
- **Test images**: the first SynthEdit test-split examples with a 16:9 native aspect (families
  cycling recolour, remove, add, background, global); the input is rendered at the output size and
  the ground truth (clean target) is rendered at the output size, exactly.
- **PSNR / SSIM** (scikit-image) of the output against the ground truth over the full frame;
  **PSNR unedited**: over the pixels the edit must not change (edit mask false; undefined for global
  edits); **edit-region MAE**: mean absolute error (0-255) inside the edit mask.
- **Artifact ratio**: share of pixels the artifact detector M (`models.detector`) gives p > 0.5, on the
  whole frame box-downscaled to a 512-px long side (M was trained on 128-px scenes; a 4K frame is out of
  its range and too slow on a CPU); **mean artifact probability**: the mean p on the same view.
- **LR-consistency**: PSNR between the output box-downscaled to the standard-resolution edit's size
  and the standard-resolution edit itself (same seed): how much the upscaling changed or invented.
- **BRISQUE** (`brisque` 0.2.0, libsvm model, numpy-2 shim): on a 512x512 centre crop at the output's
  native resolution (a crop keeps the pixel statistics BRISQUE judges; a full 4K frame is slow).
- **Paired comparisons**: every method runs on the same test images at a size. *difference* = mean over
  those images of (mobilepicasso - baseline) in the metric's unit, 95% Student-t CI (none with one image).
- **quality +x%** = 100 x (mean PSNR of mobilepicasso / mean PSNR of the baseline - 1) over the test
  images both ran; **hallucination -y%** = 100 x (mean artifact ratio of mobilepicasso / mean artifact
  ratio of the baseline - 1) (negative = fewer artifacts). **95% CI**: percentile bootstrap, 2000
  resamples of the test images with replacement (paired: the same images for both methods). With one
  or two images the interval is degenerate; n is shown. The paper's own 18-48% / 14-51% come from a
  user study, not from these metrics: the numbers here are automatic proxies in the same form.
- **Limit ratio**: latent pixels the tiled U-Net evaluates per step / output latent pixels
  (`TilePlan.limit_ratio`); 1.0 is the smallest possible cost (one pass, no overlap).
"""


def write_readme(root: Path) -> Path:
    """Write `root/README.md` from every suite folder under `root` (those with a meta.json)."""
    lines = ["# Benchmark results", "",
             "Generated by `python -m pipeline bench` from the CSV files in this folder; do not edit by hand.", "",
             "Reproduce:", "", "```",
             "python -m pipeline bench --methods all --sizes 1024,2048,4k --models mini --repeats 3 --out results/bench",
             "python -m pipeline bench --suite direct --models mini --out results/bench   # after the main suite",
             "python -m pipeline bench --suite tiles --models sd15-arch --out results/tiles",
             "python -m pipeline bench --quick --out OUT/bench && python -m pipeline bench --suite direct --quick --out OUT/bench",
             "python -m pipeline bench --suite tiles --quick --out OUT/tiles   # the CI smoke versions (write OUT/README.md)",
             "python -m pipeline bench --replot --out results/bench   # redraw plots and this README from the CSVs", "```", ""]
    found = sorted((_meta(d).get("suite"), d.name) for d in root.iterdir() if (d / "meta.json").is_file())
    for suite, name in found:
        section = {"main": bench_section, "tiles": tiles_section}.get(suite)
        if section is not None:
            lines += section(root / name, name)
    lines += [DEFINITIONS]
    path = root / "README.md"
    path.write_text("\n".join(lines))
    return path
