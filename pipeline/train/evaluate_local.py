"""Edit only what is named: paired quality tables of the detail-preserving `mobilepicasso`.

`python -m pipeline.train evaluate --tables local [--eval-n 400] [--long-side 1024]` runs, on the same
SynthEdit test examples, every method below through `pipeline.edit` (one shared memo per example, so
the methods that share an edit pay for it once) and writes per-example rows (resumable: finished seeds
are kept) and a per-family table of paired differences with 95% CIs (paired t).

Per example: PSNR against the target over the whole frame, over the unedited part (outside the true
edit mask) and inside it; the IoU of the pixels the output changed with the true mask; for *add*, whether the named colour is really there (at least half the
true-mask pixels within 80 RGB units of it). The mask-only / + transfer / + generative / + region colour
map / + surround fill rows are the ablation of `mobilepicasso` (`origins=`, `use_colour_map=`, `use_fill=`,
without the look model);
`mobilepicasso` itself adds the look model (global looks as one colour map). `--local-methods` re-runs
only the named rows.
"""
from __future__ import annotations

import argparse
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline import synthedit as se
from pipeline.bench.metrics import psnr
from pipeline.train.tables import paired_ci, read_csv, write_csv

METHODS = ("mobilepicasso", "mobilepicasso-paper", "ip2p-bicubic", "ip2p-composite")
ABLATION = {  # each row adds one stage; mobilepicasso itself adds the look model to "+ surround fill"
    "mask only": {"origins": "edit", "use_look": False, "use_colour_map": False, "use_fill": False},
    "+ transfer": {"origins": "transfer", "use_look": False, "use_colour_map": False, "use_fill": False},
    "+ generative": {"use_look": False, "use_colour_map": False, "use_fill": False},
    "+ region colour map": {"use_look": False, "use_fill": False},
    "+ surround fill": {"use_look": False},
}
PRESENT_DISTANCE, PRESENT_SHARE = 80.0, 0.5
CHANGED_LEVELS = 8


def shape_present(out: np.ndarray, ex: se.EditExample, mask: np.ndarray) -> bool:
    colour = np.array(se.COLOURS[ex.target_scene.shapes[ex.changed[0]].colour], np.float64)
    dist = np.linalg.norm(out[mask].astype(np.float64) - colour, axis=1)
    return bool(mask.any() and (dist < PRESENT_DISTANCE).mean() >= PRESENT_SHARE)


def changed_iou(out: np.ndarray, source: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the pixels a method changed (by more than CHANGED_LEVELS in some channel) with the true edit
    mask: the region an output really edited, whatever mask produced it (1 when both are empty)."""
    changed = (np.abs(out.astype(np.int16) - source.astype(np.int16)) > CHANGED_LEVELS).any(-1)
    union = (changed | mask).sum()
    return float((changed & mask).sum() / union) if union else 1.0


def example_rows(seed: int, long_side: int, models: str, methods: tuple[str, ...], ablation: bool,
                 only: frozenset[str] | None = None) -> list[dict]:
    """The rows of one example: every method (and the ablation rows), or only the rows named in `only`."""
    from pipeline import edit

    ex = se.sample(seed)
    w, h = ex.size(long_side)
    src, tgt = ex.source(w, h), np.asarray(ex.target(w, h))
    mask = ex.edit_mask(w, h)
    memo: dict = {}
    runs = [(m, m, {}) for m in methods]
    if ablation:
        runs += [(name, "mobilepicasso", options) for name, options in ABLATION.items()]
    outputs = [] if only else [("no edit", np.asarray(src), 0.0, None)]
    for name, method, options in runs:
        if only and name not in only:
            continue
        r = edit(src, ex.instruction, method=method, size=(w, h), models=models, seed=0, memo=memo, **options)
        outputs.append((name, np.asarray(r.image), r.report.total_seconds, r.report.region))
    rows = []
    for name, out, seconds, region in outputs:
        row = {"seed": seed, "family": ex.family, "size": f"{w}x{h}", "method": name, "psnr": psnr(out, tgt),
               "psnr_unedited": psnr(out, tgt, ~mask), "psnr_edited": psnr(out, tgt, mask), "seconds": seconds,
               "generative_share": (region or {}).get("generative", ""),
               "changed_iou": changed_iou(out, np.asarray(src), mask)}
        if ex.family == "add":
            row["shape_present"] = int(shape_present(out, ex, mask))
        rows.append(row)
    return rows


def _worker(job) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    return example_rows(*job)


def summarise(rows: list[dict]) -> list[dict]:
    """Per family and method: n, mean PSNRs, and the paired difference (95% CI) against no edit and
    against ip2p-bicubic, on exactly the examples both ran on."""
    table = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["seed"], r["method"]): r for r in rows}
    families = ["all", *dict.fromkeys(r["family"] for r in rows)]
    for fam in families:
        for m in methods:
            sel = [r for r in rows if r["method"] == m and (fam == "all" or r["family"] == fam)]
            if not sel:
                continue
            row = {"family": fam, "method": m, "n": len(sel), "psnr": np.mean([r["psnr"] for r in sel])}
            unedited = [r["psnr_unedited"] for r in sel if not np.isnan(r["psnr_unedited"])]
            row["psnr_unedited"] = float(np.mean(unedited)) if unedited else float("nan")
            for base in ("no edit", "ip2p-bicubic"):
                pairs = [(r["psnr"], by[(r["seed"], base)]["psnr"]) for r in sel if (r["seed"], base) in by]
                if base == m or len(pairs) < 2:
                    continue
                a, b = zip(*pairs)
                key = base.replace(" ", "_").replace("-", "_")
                row[f"diff_vs_{key}"] = float(np.mean(a) - np.mean(b))
                row[f"diff_vs_{key}_ci95_low"], row[f"diff_vs_{key}_ci95_high"] = paired_ci(list(a), list(b))
            changed = [float(r["changed_iou"]) for r in sel if r.get("changed_iou") not in (None, "")]
            if changed:
                row["changed_iou"] = float(np.mean(changed))
            present = [int(r["shape_present"]) for r in sel if r.get("shape_present") not in (None, "")]
            if present:
                row["shape_present_share"] = float(np.mean(present))
            row["seconds"] = float(np.mean([r["seconds"] for r in sel]))
            table.append(row)
    return table


def run(args: argparse.Namespace) -> None:
    out = Path(args.results)
    long_side = getattr(args, "long_side", None) or 1024
    n = args.eval_n or 400
    tag = f"local_{long_side}"
    runs_path = out / f"{tag}_runs.csv"
    rows = read_csv(runs_path, ints=("seed",), floats=("psnr", "psnr_unedited", "psnr_edited", "seconds"))
    methods = METHODS if long_side <= 2048 else tuple(m for m in METHODS if m != "mobilepicasso-paper")
    ablation = long_side <= 2048
    only = frozenset(args.local_methods.split(",")) if getattr(args, "local_methods", None) else None
    if only:
        unknown = only - {*methods, *(ABLATION if ablation else ())}
        if unknown:  # else their old rows would be dropped and nothing re-run
            raise SystemExit(f"--local-methods: unknown {sorted(unknown)}")
        rows = [r for r in rows if r["method"] not in only]
    done = set() if only else {r["seed"] for r in rows}
    seeds = [s for s in se.split_seeds("test", n) if s not in done]
    jobs = [(s, long_side, args.models or args.out, methods, ablation, only) for s in seeds]
    workers = int(os.environ.get("EVAL_WORKERS", "2"))
    with get_context("spawn").Pool(workers) as pool:
        for i, new in enumerate(pool.imap(_worker, jobs)):
            rows.extend(new)
            if i % 10 == 9 or i == len(jobs) - 1:
                write_csv(runs_path, rows)
                print(f"[local {long_side}] {i + 1}/{len(jobs)} examples", flush=True)
    rows = [r for r in rows if r["seed"] in set(se.split_seeds("test", n))]
    write_csv(runs_path, rows)
    write_csv(out / f"{tag}.csv", summarise(rows))


TUNING = {  # the settings `mobilepicasso` and `ip2p-composite` read from model_set.json
    "blend_latents": (True, False),
    "residual_threshold": (0.04, 0.08, 0.12, 0.2, 2.0),  # 2.0: never generative (residuals are in [0, 1])
    "composite_threshold": (0.05, 0.1, 0.15, 0.2, 0.3),
    "new_edge_gain": (1.0, 2.0, 4.0, 8.0),  # changes additions only
    "support_fraction": (0.5, 0.75),
    "colour_support": ("everywhere", "border", "off"),
}


def tune(args: argparse.Namespace, n: int = 60, long_side: int = 512) -> list[dict]:
    """Choose the settings on the validation split (one at a time, the others at their current value):
    mean PSNR over `n` examples; with --apply-sweep the best go into model_set.json."""
    import dataclasses
    import json

    from pipeline import edit
    from pipeline.model_sets import load_model_set

    path = str(args.models or args.out)
    models = load_model_set(path)
    base = models.info
    examples = [se.sample(s) for s in se.split_seeds("validation", n)]
    sources = [(ex, ex.source(*ex.size(long_side)), np.asarray(ex.target(*ex.size(long_side)))) for ex in examples]
    memos = [dict() for _ in sources]
    rows = []
    for key, values in TUNING.items():
        method = "ip2p-composite" if key == "composite_threshold" else "mobilepicasso"
        for value in values:
            models.info = dataclasses.replace(base, **{key: value})
            scores = [psnr(np.asarray(edit(src, ex.instruction, method=method, size=src.size, models=path, seed=0,
                                            memo=memo).image), tgt) for (ex, src, tgt), memo in zip(sources, memos)]
            rows.append({"setting": key, "value": value, "method": method, "n": n, "psnr": float(np.mean(scores))})
            print(rows[-1], flush=True)
    models.info = base
    best = {key: max((r for r in rows if r["setting"] == key), key=lambda r: r["psnr"])["value"] for key in TUNING}
    write_csv(Path(args.results) / "local_tuning.csv", rows)
    if args.apply_sweep:
        cfg_path = Path(path) / "model_set.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(best)
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        print("chosen:", best, flush=True)
    return rows


def example_grid(out: Path, models: str, long_side: int = 3840, crop: int = 320) -> list[dict]:
    """The demo's five SynthEdit examples (the first test scene of each family) at `long_side`: a grid
    of source / mobilepicasso / mobilepicasso-paper, each downscaled and as a 1:1 crop centred on the
    true edit region, plus a CSV of PSNR against the target for each and for no edit."""
    from PIL import Image, ImageDraw

    from pipeline import edit

    found: dict[str, se.EditExample] = {}
    for seed in se.split_seeds("test", 200):
        ex = se.sample(seed)
        found.setdefault(ex.family, ex)
    rows, tiles = [], []
    for family in se.FAMILIES:
        ex = found[family]
        w, h = ex.size(long_side)
        src, tgt, mask = ex.source(w, h), np.asarray(ex.target(w, h)), ex.edit_mask(w, h)
        ys, xs = np.nonzero(mask) if mask.any() else (np.array([h // 2]), np.array([w // 2]))
        cx, cy = int(np.clip(xs.mean(), crop // 2, w - crop // 2)), int(np.clip(ys.mean(), crop // 2, h - crop // 2))
        box = (cx - crop // 2, cy - crop // 2, cx + crop // 2, cy + crop // 2)
        images = {"source": src}
        for method in ("mobilepicasso", "mobilepicasso-paper"):
            images[method] = edit(src, ex.instruction, method=method, size=(w, h), models=models).image
        row = {"family": family, "seed": ex.seed, "instruction": ex.instruction, "size": f"{w}x{h}"}
        for name, im in images.items():
            row[f"psnr_{name}"] = psnr(np.asarray(im), tgt)
        rows.append(row)
        tiles.append((ex.instruction, [im.resize((crop * w // h, crop)) for im in images.values()],
                      [im.crop(box) for im in images.values()]))
    cell_w = max(t[1][0].width for t in tiles)
    grid = Image.new("RGB", (3 * cell_w + 3 * crop, len(tiles) * (crop + 24)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (text, small, crops) in enumerate(tiles):
        y = r * (crop + 24)
        draw.text((4, y + 4), f"{text}   (source | mobilepicasso | mobilepicasso-paper; then 1:1 crops)", fill="black")
        for c, im in enumerate(small):
            grid.paste(im, (c * cell_w, y + 24))
        for c, im in enumerate(crops):
            grid.paste(im, (3 * cell_w + c * crop, y + 24))
    out.mkdir(parents=True, exist_ok=True)
    grid.save(out / "examples.png")
    write_csv(out / "examples.csv", rows)
    return rows
