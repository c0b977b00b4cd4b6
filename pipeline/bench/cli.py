"""`python -m pipeline bench`: run a suite, write CSVs and PNGs under --out, print a short table,
and regenerate the README one folder up.

    python -m pipeline bench --methods all --sizes 1024,2048,4k --models mini --repeats 3 --out results/bench
    python -m pipeline bench --suite tiles --models sd15-arch --out results/tiles
    python -m pipeline bench --suite direct --models mini --out results/bench    # after the main suite
    python -m pipeline bench --quick --out OUT/bench                # the CI smoke version of the main suite
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

QUICK_SIZES = ["640"]
QUICK_TILE = 64             # so that a 640-px output still has two upscaler tiles (seams to measure)
QUICK_TILE_SIZES = ["640", "1024"]
QUICK_STEPS = 2


def register(subparsers) -> None:
    from pipeline.inputs import parse_bytes

    p = subparsers.add_parser("bench", help="benchmark methods (cost, tiling, quality) and write CSVs, plots, README",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["main", "direct", "tiles", "local", "devices"], default="main",
                   help="main: cost + quality of every method; direct: ip2p-direct's time estimate calibrated from "
                        "U-Net passes at several sizes and checked against measured direct edits (writes "
                        "direct_calibration.csv into --out and refreshes the main tables there); tiles: limit ratios, "
                        "per-tile cost, ACPT's tile choice, derived cost; local: mobilepicasso vs mobilepicasso-paper at "
                        "4K per kind of edit; devices: the previous release vs channels_last vs the device's fast "
                        "dtype at 4K, and --memory-budget held")
    p.add_argument("--methods", default="all", help="comma-separated method names, or all")
    p.add_argument("--sizes", help="comma-separated output sizes (16:9 outputs, long side or preset): default 1024,2048,4k")
    p.add_argument("--models", default="mini", help="mini | sd15-arch | a model-set folder")
    p.add_argument("--repeats", type=int, default=3,
                   help="test images per size, the same images for every method (one run per image; default 3)")
    p.add_argument("--images", type=int, help="local suite: test scenes per kind of edit (default 3)")
    p.add_argument("--no-quality", action="store_true", help="cost only: skip the metrics against the ground truth")
    p.add_argument("--time-budget", type=float, default=400.0,
                   help="seconds passed to edit(): a method estimated to take longer (ip2p-direct) is a failure row")
    p.add_argument("--timeout", type=float, default=600.0, help="wall-clock limit per run (process killed, row kept)")
    p.add_argument("--tile", type=int, help="upscaler tile size for the tiled methods (default: the set's)")
    p.add_argument("--halo", type=int, help="ACPT halo")
    p.add_argument("--memory-budget", type=parse_bytes, help="working memory each run may use (windows and batches planned to fit), e.g. 512MiB")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default 1: on a small machine shared with other jobs, two OpenMP "
                        "threads made a U-Net call up to 100x slower, one waiting on its preempted peer)")
    p.add_argument("--steps", type=int, help="edit steps (default: the set's; --quick: 2)")
    p.add_argument("--measure-under", type=float, default=90.0,
                   help="tiles suite: also run a full method where its derived time is under this many seconds")
    p.add_argument("--quick", action="store_true", help="the CI smoke version: one image, small sizes, 2 edit steps; writes every file, measures nothing")
    p.add_argument("--out", default=None, help="output folder (default results/bench or results/tiles)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--replot", action="store_true", help="redraw the plots and README from the CSVs already in --out")
    p.set_defaults(func=main)


def _meta(args, suite: str, started: float, **extra) -> dict:
    import torch

    return {
        "suite": suite, "command": "python -m pipeline bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "bench" else "python -m pipeline bench ...",
        "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "wall_seconds": round(time.time() - started, 1), "models": args.models, "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(), "cpus": os.cpu_count(), "quick": args.quick, **extra,
    }


def main(args: argparse.Namespace) -> int:
    from pipeline.bench.readme import write_readme

    started = time.time()
    if args.suite == "local":
        import torch

        from pipeline.bench import local

        torch.set_num_threads(args.threads)
        summary = local.run(Path(args.out or "results/local"), models=args.models, per_kind=args.images or 3)
        print(summary.to_string(index=False))
        return 0
    if args.suite == "devices":
        import torch

        from pipeline.bench import devices

        torch.set_num_threads(args.threads)
        out = Path(args.out or "results/devices")
        print(devices.run(out, models=args.models, n=args.images or 3).to_string(index=False))
        print(devices.budgets(out, models=args.models).to_string(index=False))
        return 0
    out = Path(args.out or ("results/tiles" if args.suite == "tiles" else "results/bench"))
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        replot(out)
        print(f"redrew {out}/ and {write_readme(out.resolve().parent)}")
        return 0
    from pipeline.inputs import InputError

    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            suite = {"tiles": tiles_main, "direct": direct_main}.get(args.suite, main_suite)
            code = suite(args, out, Path(tmp), started)
    except (InputError, RuntimeError) as err:  # a bad --sizes value, a model set that cannot load
        print(f"error: {err}", file=sys.stderr)
        return 2
    if code:
        return code
    readme = write_readme(out.resolve().parent)
    print(f"wrote {out}/ and {readme} in {(time.time() - started) / 60:.1f} min")
    return code


def replot(out: Path) -> None:
    """Tables and plots from the CSVs of a finished run (its meta.json says which suite, methods and
    sizes); for the main suite, cost/quality/headline are rebuilt from runs.csv (and direct_calibration.csv)."""
    import pandas as pd

    from pipeline.bench import plots
    from pipeline.bench.runs import full_policy

    meta = json.loads((out / "meta.json").read_text())
    sizes = meta["sizes"]
    if meta["suite"] == "tiles":
        title = f"model set {meta['models']} ({'trained' if meta.get('model_set_trained') else 'random weights'}), this CPU"
        plots.tiles_figures(*(pd.read_csv(out / f, dtype={"size": str}) for f in ("limit_ratio.csv", "tile_cost.csv",
                                                                                  "derived_cost.csv")), sizes, out, title)
        return
    runs = pd.read_csv(out / "runs.csv", dtype={"size": str})
    derive = {} if meta.get("quick") else full_policy(sizes, 1).derive
    write_main_tables(out, runs, meta["methods"], sizes, derive, bool(meta.get("model_set_trained")), meta["models"])


def write_main_tables(out: Path, runs, methods: list[str], sizes: list[str], derive: dict, trained: bool,
                      models: str):
    """cost.csv, quality.csv (the common images of each size), headline.csv (paired comparisons),
    identical_outputs.csv and the plots, from runs.csv's rows; ip2p-direct's derived times come from
    direct_calibration.csv when it is there. Returns (cost, headline)."""
    import pandas as pd

    from pipeline.bench import direct, plots, tables

    cal_path = out / "direct_calibration.csv"
    cal = pd.read_csv(cal_path, dtype={"size": str}) if cal_path.is_file() else None
    estimates = {s: direct.calibrated_seconds(cal, s) for s in sizes}
    cost = tables.cost_table(runs, methods, sizes, derive, estimates)
    quality = tables.quality_table(runs, methods, sizes)
    head = tables.headline_table(runs, cost, methods, sizes)
    cost.to_csv(out / "cost.csv", index=False, float_format="%.5g")
    quality.to_csv(out / "quality.csv", index=False, float_format="%.5g")
    head.to_csv(out / "headline.csv", index=False, float_format="%.4g")
    tables.identical_outputs(runs).to_csv(out / "identical_outputs.csv", index=False)
    title = f"model set {models} ({'trained' if trained else 'UNTRAINED'}), this CPU"
    plots.cost_figures(cost, sizes, methods, out, title)
    plots.quality_figure(head, sizes, [m for m in methods if m != tables.REFERENCE], tables.QUALITY_METRICS, out, title)
    plots.seam_figure(quality, sizes, methods, out, title)
    return cost, head


def direct_main(args, out: Path, tmp: Path, started: float) -> int:
    import pandas as pd

    from pipeline.bench import direct

    runs_path = out / "runs.csv"
    runs = pd.read_csv(runs_path, dtype={"size": str}) if runs_path.is_file() and not args.quick else None
    cal = direct.run(out, args.models, tmp, quick=args.quick, steps=args.steps or (QUICK_STEPS if args.quick else None),
                     threads=args.threads, timeout=args.timeout, measured_runs=runs)
    (out / "direct_meta.json").write_text(json.dumps(_meta(args, "direct", started), indent=2) + "\n")
    print(direct.summary(cal))
    if (out / "meta.json").is_file() and json.loads((out / "meta.json").read_text()).get("suite") == "main":
        replot(out)  # the refused ip2p-direct cells take the calibrated estimate
    return 0


def _sizes(args, default: list[str]) -> list[str]:
    return [s.strip() for s in args.sizes.split(",")] if args.sizes else default


def main_suite(args, out: Path, tmp: Path, started: float) -> int:
    import pandas as pd

    from pipeline.bench import plots, tables
    from pipeline.bench.runner import run_all
    from pipeline.bench.runs import full_policy, output_size, plan_runs, quick_policy
    from pipeline.methods import METHODS

    methods = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    if tables.REFERENCE not in methods:
        methods.insert(0, tables.REFERENCE)  # every ratio is against it
    sizes = _sizes(args, QUICK_SIZES if args.quick else ["1024", "2048", "4k"])
    policy = quick_policy(sizes) if args.quick else full_policy(sizes, args.repeats)
    steps = args.steps or (QUICK_STEPS if args.quick else None)
    tile = args.tile or (QUICK_TILE if args.quick else None)
    runs = plan_runs(methods, sizes, args.models, policy, quality=not args.no_quality, time_budget=args.time_budget,
                     tile=tile, halo=args.halo, memory_budget=args.memory_budget, threads=args.threads, steps=steps)
    specs = [r.to_dict() for r in runs]
    notes = policy_notes(policy, methods, sizes, args)

    def save(results: list[dict], final: bool = False):
        """runs.csv and meta.json after every run: `--replot` turns a stopped run's finished rows into tables."""
        df = tables.run_rows(results)
        df.to_csv(out / "runs.csv", index=False, float_format="%.5g")
        trained = bool(df["trained"].dropna().all()) if "trained" in df and df["trained"].notna().any() else False
        status = [] if final else [f"INCOMPLETE: stopped after {len(results)} of {len(specs)} runs"]
        (out / "meta.json").write_text(json.dumps(_meta(args, "main", started, model_set_trained=trained, sizes=sizes,
                                                        methods=methods, notes=status + notes), indent=2) + "\n")
        return df, trained

    results = run_all("run", specs, timeout=args.timeout, workdir=tmp,
                      label=lambda s: f"{s['method']} {s['size']} #{s['image']['index']}", progress=not args.no_progress,
                      on_result=save)
    df, trained = save(results, final=True)
    cost, head = write_main_tables(out, df, methods, sizes, policy.derive, trained, args.models)
    if "weights" in df and df["weights"].nunique() > 1:
        notes.insert(0, "WARNING: the model set's weight files changed during this run (runs.csv, column weights): "
                        "rows are not comparable; run again")
    if trained is False and "trained" in df and df["trained"].notna().any():
        notes.insert(0, "the model set is (at least partly) UNTRAINED: the quality rows measure random weights")
    (out / "meta.json").write_text(json.dumps(_meta(args, "main", started, model_set_trained=trained, sizes=sizes,
                                                    methods=methods, notes=notes), indent=2) + "\n")
    print()
    print(tables.markdown(tables.headline_markdown(head, cost)) if not head.empty else "(no headline rows)")
    return 0


def policy_notes(policy, methods, sizes, args) -> list[str]:
    per_size = ", ".join(f"{s}: {max(policy.runs_for(m, s) for m in methods)}" for s in sizes)
    notes = [f"test images (= runs) per method and size: {per_size}"] + policy.notes
    notes.append(f"time budget passed to edit(): {args.time_budget:.0f} s (ip2p-direct beyond it is a failure row with a "
                 f"derived time); per-run wall-clock limit {args.timeout:.0f} s")
    if args.tile or args.halo or args.memory_budget:
        notes.append(f"tiled methods ran with tile={args.tile}, halo={args.halo}, memory budget={args.memory_budget}")
    return notes


def tiles_main(args, out: Path, tmp: Path, started: float) -> int:
    from pipeline.bench import plots, tables
    from pipeline.bench.tiles import MODE_METHOD, run_tiles_suite

    sizes = _sizes(args, QUICK_TILE_SIZES if args.quick else ["1024", "2048", "4k"])
    steps = args.steps or (QUICK_STEPS if args.quick else None)
    r = run_tiles_suite(args.models, sizes, out, timeout=args.timeout, repeats=1 if args.quick else 2,
                        threads=args.threads, quick=args.quick, measure_under=args.measure_under,
                        progress=not args.no_progress, workdir=tmp, steps=steps,
                        measure_methods=["mobilepicasso-paper"] if args.quick else list(MODE_METHOD.values()),
                        measure_sizes=sizes[:1] if args.quick else sizes)
    facts = r["facts"]
    title = f"model set {args.models} ({'trained' if facts['trained'] else 'random weights'}), upscaler {facts['upscaler']}, this CPU"
    plots.tiles_figures(r["limits"], r["costs"], r["derived"], sizes, out, title)
    notes = [
        f"upscaler: {facts['upscaler']}, {facts['upscaler_steps']} step(s), default tile {facts['tile']} latent px, "
        f"halo {facts['halo']}, align {facts['align']}, batch {facts['batch_size']} windows per call; decode tile "
        f"{facts['decode_tile']} + halo {facts['decode_halo']}",
        "per-tile latency: best of the timed calls after one warm-up call (a call over 5 s is timed once, cold); "
        "memory: rise of the process peak RSS over the resident set before the call (activations, not weights); "
        "one worker process per tile size" + (" (--quick: all in one process)" if args.quick else ""),
        f"edit stage: {r['units']['edit'].get('seconds_per_evaluation', float('nan')):.3f} s per U-Net evaluation at "
        f"the standard size, measured; decode: {r['units']['decode'].get('seconds_per_tile', float('nan')):.3f} s per "
        "decode tile, measured; U-Net FLOPs counted exactly per window shape on the meta device",
        f"full methods were also run where the derived total is under {args.measure_under:.0f} s",
    ]
    (out / "meta.json").write_text(json.dumps(_meta(args, "tiles", started, model_set_trained=facts["trained"],
                                                    sizes=sizes, notes=notes), indent=2) + "\n")
    d = r["derived"][["size", "method", "tiles", "total_s_derived", "total_s_measured"]]
    lim = r["limits"][r["limits"]["default_tile"]][["size", "what", "tiles", "limit_ratio"]]
    print()
    print(tables.markdown(lim.round(3)))
    print(tables.markdown(d.round(2)))
    return 0
