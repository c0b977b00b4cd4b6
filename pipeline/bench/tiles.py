"""The tiling suite: what tiling costs, measured per tile and derived per image.

1. Limit ratios (pure planning): every tiled mode's U-Net pixel-evaluations over the minimum, one
   pass over the output latent with no overlap (`TilePlan.limit_ratio`); also the decode tiling.
2. Per-tile latency and peak memory against tile size (the paper's Figure 1 b/c, on this
   machine): one worker process per tile size, one batch of `upscaler.batch_size` windows.
3. The tile size ACPT picks (`choose_tile_size`) under a few memory budgets.
4. Derived full-image cost = tile counts x measured per-tile cost (+ edit U-Net evaluations x
   measured per-evaluation cost + decode tiles x measured per-decode-tile cost); exact U-Net
   FLOPs per window shape on the meta device. Where the derived total is under `measure_under`
   seconds the full method also runs, and the measured time stands next to the derived one.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.bench.runner import run_all, run_worker
from pipeline.bench.runs import output_size, bench_images
from pipeline.stages.edit import standard_size
from pipeline.tiling import MODES, TileCost, choose_tile_size, plan_tiles

MODE_METHOD = {"acpt": "mobilepicasso-paper", "naive": "tiled-naive", "overlap": "tiled-overlap"}


@dataclass
class SetFacts:
    """What the planner needs about a model set (from a `describe` worker: the parent stays light)."""

    d: dict

    def __getattr__(self, k):
        return self.d[k]

    def cond_size(self, width: int, height: int) -> tuple[int, int]:
        f = self.latent_factor
        return math.ceil(height / f), math.ceil(width / f)

    def plan(self, width: int, height: int, mode: str, tile: int | None = None):
        tile = tile or self.tile
        return plan_tiles(*self.cond_size(width, height), tile, self.halo, mode=mode, align=self.align)

    def decode_plan(self, width: int, height: int):
        return plan_tiles(*self.cond_size(width, height), self.decode_tile, self.decode_halo, mode="acpt")


def limit_table(facts: SetFacts, sizes: Sequence[str]) -> pd.DataFrame:
    rows = []
    for size in sizes:
        w, h = output_size(size)
        for mode in MODES:
            for tile in facts.tile_sizes:
                try:
                    p = facts.plan(w, h, mode, tile)
                except ValueError:
                    continue
                rows.append({"size": size, "width": w, "height": h, "what": f"upscaler:{mode}", "method": MODE_METHOD[mode],
                             "tile": tile, "halo": p.halo, "default_tile": tile == facts.tile, "grid": f"{p.grid[0]}x{p.grid[1]}",
                             "tiles": p.n_tiles, "latent": f"{p.height}x{p.width}", "evaluated_px": p.evaluated_pixels,
                             "limit_ratio": p.limit_ratio, "output_overlap": p.output_overlap})
        p = facts.decode_plan(w, h)
        rows.append({"size": size, "width": w, "height": h, "what": "decode:acpt", "method": "(all three)",
                     "tile": facts.decode_tile, "halo": p.halo, "default_tile": True, "grid": f"{p.grid[0]}x{p.grid[1]}",
                     "tiles": p.n_tiles, "latent": f"{p.height}x{p.width}", "evaluated_px": p.evaluated_pixels,
                     "limit_ratio": p.limit_ratio, "output_overlap": p.output_overlap})
    return pd.DataFrame(rows)


def unit_costs(models: str, facts: SetFacts, *, timeout: float, workdir: Path, repeats: int, threads: int | None,
               one_process: bool, progress: bool) -> dict:
    """Measured per-call costs: upscaler per tile size, edit U-Net per evaluation, decode per tile."""
    w, h = output_size("1024")
    edit_size = standard_size(w, h, facts.edit_resolution, facts.edit_multiple)
    items = [{"kind": "upscaler", "tile": t, "repeats": repeats} for t in facts.tile_sizes]
    items += [{"kind": "edit", "edit_size": list(edit_size), "repeats": repeats}, {"kind": "decode", "repeats": repeats}]
    if one_process:
        r = run_all("unit", [{"kind": "batch", "items": items, "models": models, "threads": threads}],
                    timeout=timeout, workdir=workdir, label=lambda s: "component costs", progress=progress, desc="tiles")[0]
        results = r.get("items") or [{"status": "failed", "failure_reason": r.get("failure_reason"), **i} for i in items]
    else:
        results = run_all("unit", [{**i, "models": models, "threads": threads} for i in items], timeout=timeout,
                          workdir=workdir, label=lambda s: f"{s['kind']} {s.get('tile', '')}".strip(),
                          progress=progress, desc="tiles")
        results = [{**i, **r} for i, r in zip(items, results)]
    return {"upscaler": [r for r in results if r.get("kind") == "upscaler"],
            "edit": next((r for r in results if r.get("kind") == "edit"), {}),
            "decode": next((r for r in results if r.get("kind") == "decode"), {})}


def tile_cost_table(units: dict) -> pd.DataFrame:
    rows = []
    for r in units["upscaler"]:
        ok = "seconds_per_tile" in r
        rows.append({"tile": r["tile"], "status": "ok" if ok else "failed", "failure_reason": r.get("failure_reason"),
                     "batch": r.get("batch"), "seconds_per_tile": r.get("seconds_per_tile", math.nan),
                     "peak_mib": r["peak_bytes"] / 2**20 if ok else math.nan,
                     "gflops_per_tile": (r.get("flops_per_tile") or math.nan) / 1e9,
                     "us_per_latent_px": 1e6 * r["seconds_per_tile"] / r["tile"] ** 2 if ok else math.nan})
    return pd.DataFrame(rows)


def choice_table(facts: SetFacts, costs: pd.DataFrame, sizes: Sequence[str]) -> pd.DataFrame:
    """ACPT's tile size under memory budgets: unlimited, each tile size's own peak, and below the smallest."""
    ok = costs[costs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    table = [TileCost(int(r.tile), float(r.seconds_per_tile), int(r.peak_mib * 2**20)) for r in ok.itertuples()]
    budgets = [None] + sorted({row.peak_bytes for row in table}) + [min(row.peak_bytes for row in table) // 2]
    rows = []
    for size in sizes:
        w, h = output_size(size)
        ch, cw = facts.cond_size(w, h)
        for budget in budgets:
            row = {"size": size, "memory_budget_mib": "unlimited" if budget is None else round(budget / 2**20, 1)}
            try:
                pick = choose_tile_size(ch, cw, facts.halo, table, align=facts.align, memory_budget=budget)
            except MemoryError as err:
                rows.append({**row, "chosen_tile": None, "note": str(err)})
                continue
            plan = facts.plan(w, h, "acpt", pick.tile)
            rows.append({**row, "chosen_tile": pick.tile, "tiles": plan.n_tiles, "limit_ratio": plan.limit_ratio,
                         "upscale_seconds_est": plan.n_tiles * pick.seconds * facts.upscaler_steps,
                         "peak_mib": pick.peak_bytes / 2**20, "note": ""})
    return pd.DataFrame(rows)


def _per_tile(units: dict, tile: int) -> dict | None:
    for r in units["upscaler"]:
        if r.get("tile") == tile and "seconds_per_tile" in r:
            return r
    return None


def derived_table(facts: SetFacts, units: dict, flops: dict, sizes: Sequence[str], measured: dict,
                  steps: int | None = None) -> pd.DataFrame:
    """Per (size, tiled method): derived stage seconds and U-Net FLOPs; measured totals where run."""
    edit, dec = units["edit"], units["decode"]
    edit_evals = (steps or facts.steps) * facts.cfg_batch
    rows = []
    for size in sizes:
        w, h = output_size(size)
        for mode, method in MODE_METHOD.items():
            plan = facts.plan(w, h, mode)
            unit = _per_tile(units, plan.tile)
            row = {"size": size, "method": method, "tile": plan.tile, "tiles": plan.n_tiles,
                   "upscaler_steps": facts.upscaler_steps, "edit_evals": edit_evals,
                   "upscale_evals": plan.n_tiles * facts.upscaler_steps}
            edit_s = edit_evals * edit.get("seconds_per_evaluation", math.nan)
            # windows smaller than the tile (naive cores, small images) cost their share of the area
            area = plan.evaluated_pixels / plan.tile**2
            up_s = facts.upscaler_steps * area * (unit["seconds_per_tile"] if unit else math.nan)
            dplan = facts.decode_plan(w, h)
            dec_s = dplan.evaluated_pixels / facts.decode_tile**2 * dec.get("seconds_per_tile", math.nan)
            shape_flops = [flops.get(f"{t.window_shape[0]}x{t.window_shape[1]}") for t in plan.tiles]
            up_flops = facts.upscaler_steps * sum(shape_flops) if all(f is not None for f in shape_flops) else math.nan
            edit_flops = edit_evals * (edit.get("flops_per_evaluation") or math.nan)
            row.update(edit_s_derived=edit_s, upscale_s_derived=up_s, decode_s_derived=dec_s,
                       total_s_derived=edit_s + up_s + dec_s,
                       unet_gflops_derived=(edit_flops + up_flops) / 1e9, upscale_gflops_derived=up_flops / 1e9)
            m = measured.get((size, method))
            if m is None:
                row.update(measured="no", total_s_measured=math.nan)
            elif m.get("status") != "ok":
                row.update(measured=f"failed: {m.get('failure_reason')}", total_s_measured=math.nan)
            else:
                rep = m["report"]
                st = rep["stage_seconds"]
                row.update(measured="yes", total_s_measured=rep["total_seconds"], edit_s_measured=st.get("edit"),
                           upscale_s_measured=st.get("upscale"), decode_s_measured=st.get("decode"),
                           unet_gflops_measured=sum(rep["unet_flops"].values()) / 1e9,
                           peak_mib_measured=rep["peak_memory_bytes"] / 2**20)
            rows.append(row)
    return pd.DataFrame(rows)


def direct_rows(estimates: dict, sizes: Sequence[str], derived: pd.DataFrame) -> pd.DataFrame:
    """ip2p-direct (one edit at the output size) from `estimate_direct_edit`: exact FLOPs on the meta
    device / the measured throughput of a real U-Net pass at the standard size. Edit stage only."""
    rows = []
    for size in sizes:
        w, h = output_size(size)
        est = estimates.get(f"{w}x{h}")
        if est is None:
            continue
        mp = derived[(derived["size"] == size) & (derived["method"] == "mobilepicasso-paper")]["total_s_derived"]
        rows.append({"size": size, "method": "ip2p-direct", "edit_s_derived": est["seconds"],
                     "total_s_derived": est["seconds"], "unet_gflops_derived": est["tflops"] * 1e3,
                     "measured": "no", "total_s_measured": math.nan,
                     "mobilepicasso_speedup_x": est["seconds"] / mp.iloc[0] if len(mp) else math.nan})
    return pd.DataFrame(rows)


def window_shapes(facts: SetFacts, sizes: Sequence[str]) -> list[tuple[int, int]]:
    shapes = set()
    for size in sizes:
        w, h = output_size(size)
        for mode in MODES:
            shapes |= {t.window_shape for t in facts.plan(w, h, mode).tiles}
    return sorted(shapes)


def run_tiles_suite(models: str, sizes: Sequence[str], out: Path, *, timeout: float, repeats: int, threads: int | None,
                    quick: bool, measure_under: float, progress: bool, workdir: Path, steps: int | None = None,
                    measure_methods: Sequence[str] = tuple(MODE_METHOD.values()),
                    measure_sizes: Sequence[str] | None = None) -> dict:
    describe = run_worker("unit", {"kind": "describe", "models": models}, timeout, workdir)
    if describe.get("status") == "failed":
        raise RuntimeError(f"cannot load model set {models!r}: {describe.get('failure_reason')}")
    facts = SetFacts(describe)
    limits = limit_table(facts, sizes)
    units = unit_costs(models, facts, timeout=timeout, workdir=workdir, repeats=repeats, threads=threads,
                       one_process=quick, progress=progress)
    costs = tile_cost_table(units)
    choice = choice_table(facts, costs, sizes)
    fl = run_worker("unit", {"kind": "flops", "models": models, "shapes": window_shapes(facts, sizes)}, timeout, workdir)
    flops = fl.get("flops") or {}
    direct = run_worker("unit", {"kind": "direct", "models": models, "sizes": [output_size(s) for s in sizes],
                                 "steps": steps, "threads": threads}, timeout, workdir).get("estimates") or {}
    derived = derived_table(facts, units, flops, sizes, {}, steps)
    # measure the full methods where the derived total says it fits
    image = bench_images(1)[0]
    specs = []
    for r in derived.itertuples():
        if r.method in measure_methods and (measure_sizes is None or r.size in measure_sizes) and math.isfinite(r.total_s_derived) and r.total_s_derived <= measure_under:
            w, h = output_size(r.size)
            specs.append({"method": r.method, "size": r.size, "width": w, "height": h, "image": vars(image),
                          "models": models, "quality": False, "time_budget": None, "tile": None, "halo": None,
                          "memory_budget": None, "threads": threads, "steps": steps})
    results = run_all("run", specs, timeout=timeout, workdir=workdir,
                      label=lambda s: f"{s['method']} {s['size']}", progress=progress, desc="tiles: full runs")
    measured = {(s["size"], s["method"]): r for s, r in zip(specs, results)}
    derived = derived_table(facts, units, flops, sizes, measured, steps)
    derived = pd.concat([derived, direct_rows(direct, sizes, derived)], ignore_index=True)
    derived["why_not_measured"] = [
        "" if m == "yes" else (f"derived total {t:.0f} s > {measure_under:.0f} s: too slow to run here"
                               if math.isfinite(t) and t > measure_under else ("not selected" if m == "no" else m))
        for m, t in zip(derived["measured"], derived["total_s_derived"])]
    out.mkdir(parents=True, exist_ok=True)
    limits.to_csv(out / "limit_ratio.csv", index=False, float_format="%.4g")
    costs.to_csv(out / "tile_cost.csv", index=False, float_format="%.4g")
    choice.to_csv(out / "tile_choice.csv", index=False, float_format="%.4g")
    derived.to_csv(out / "derived_cost.csv", index=False, float_format="%.4g")
    units_row = {"edit": units["edit"], "decode": units["decode"], "facts": facts.d}
    return {"facts": facts.d, "limits": limits, "costs": costs, "choice": choice, "derived": derived, "units": units_row}
