"""Looks on held-out photos at 4K: `python -m pipeline.train evaluate --tables photos [--long-side 3840]`.

Every test-split photo of the pool (never in a training batch), whole, resized to `long_side`; each
PhotoEdit look with its first phrasing; the target is the look applied to that full-resolution
photo. Per (photo, look): PSNR of no edit, `mobilepicasso`, `ip2p-bicubic` and `mobilepicasso` without
its look model (`use_look=False`: the look goes through the 128-px editor, the edit region and the
colour transfer; one shared memo, so the 128-px edit runs once). The table gives, per look, the mean PSNR with its 95% CI (t) over
photos, and the paired difference against `ip2p-bicubic` (95% CI, paired t). Rows are resumable.
`--tables photo-sheet` draws the contact sheet (a public-domain photo: source, each look, 1:1 crops at 4K).
"""
from __future__ import annotations

import argparse
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import stats

from pipeline import photoedit as pe
from pipeline import photos
from pipeline.bench.metrics import psnr
from pipeline.train.tables import paired_ci, read_csv, write_csv

METHODS = ("mobilepicasso", "ip2p-bicubic")
ABLATION = {"mobilepicasso without the look model": {"use_look": False}}


def photo_rows(photo: photos.Photo, long_side: int, models: str, looks: tuple[str, ...]) -> list[dict]:
    from pipeline import edit

    image = photos.open_photo(str(photo.file()))
    rows = []
    for look in looks:
        ex = pe.sample(image, photo.id, 0, look=look, whole=True)
        w, h = ex.size(long_side)
        src = ex.source(w, h)
        tgt = np.asarray(ex.target(w, h))
        instruction = pe.PHRASES[look][0]
        memo: dict = {}
        rows.append({"photo": photo.id, "look": look, "instruction": instruction, "size": f"{w}x{h}",
                     "method": "no edit", "psnr": psnr(np.asarray(src), tgt), "seconds": 0.0})
        runs = [(m, m, {}) for m in METHODS] + [(name, "mobilepicasso", options) for name, options in ABLATION.items()]
        for name, method, options in runs:
            r = edit(src, instruction, method=method, size=(w, h), models=models, seed=0, memo=memo, **options)
            rows.append({**rows[-1], "method": name, "psnr": psnr(np.asarray(r.image), tgt),
                         "seconds": r.report.total_seconds})
    return rows


def _worker(job) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    return photo_rows(*job)


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    v = np.asarray(values, float)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def summarise(rows: list[dict]) -> list[dict]:
    """Per look and method: n photos, mean PSNR (95% CI), paired difference against ip2p-bicubic."""
    by = {(r["photo"], r["look"], r["method"]): r["psnr"] for r in rows}
    table = []
    for look in [*dict.fromkeys(r["look"] for r in rows), "all"]:
        for method in ("no edit", *METHODS, *ABLATION):
            sel = [r for r in rows if r["method"] == method and look in ("all", r["look"])]
            if not sel:
                continue
            scores = [r["psnr"] for r in sel]
            lo, hi = mean_ci(scores)
            row = {"look": look, "method": method, "n": len(sel), "psnr": float(np.mean(scores)),
                   "psnr_ci95_low": lo, "psnr_ci95_high": hi}
            base = [by.get((r["photo"], r["look"], "ip2p-bicubic")) for r in sel]
            if method != "ip2p-bicubic" and None not in base and len(sel) > 1:
                row["diff_vs_ip2p_bicubic"] = float(np.mean(scores) - np.mean(base))
                row["diff_vs_ip2p_bicubic_ci95_low"], row["diff_vs_ip2p_bicubic_ci95_high"] = paired_ci(scores, base)
            row["seconds"] = float(np.mean([r["seconds"] for r in sel]))
            table.append(row)
    return table


def _test_photos(args: argparse.Namespace, table: str) -> tuple[list[photos.Photo], int, Path] | None:
    """The held-out photos a photo table runs on (`--eval-n` of them), its long side and its folder;
    None (said once) without a pool."""
    pool = photos.load_pool(split="test")
    if not pool:
        print(f"photos: no photo pool (run `python -m pipeline.train photos`); {table} table skipped")
        return None
    pool = pool[: args.eval_n] if args.eval_n else pool
    return pool, getattr(args, "long_side", None) or 3840, Path(args.results).parent / "photos"


def run(args: argparse.Namespace) -> None:
    found = _test_photos(args, "looks")
    if found is None:
        return
    pool, long_side, out = found
    runs_path = out / f"looks_{long_side}_runs.csv"
    rows = [r for r in read_csv(runs_path, floats=("psnr", "seconds")) if r["photo"] in {p.id for p in pool}]
    done = {r["photo"] for r in rows}
    jobs = [(p, long_side, str(args.models or args.out), pe.LOOKS) for p in pool if p.id not in done]
    workers = int(os.environ.get("EVAL_WORKERS", "2"))
    with get_context("spawn").Pool(workers) as mp:
        for new in mp.imap(_worker, jobs):
            rows.extend(new)
            write_csv(runs_path, rows)
            print(f"[photos {long_side}] {len({r['photo'] for r in rows})} photos", flush=True)
    write_csv(out / f"looks_{long_side}.csv", summarise(rows))
    write_csv(out / "manifest.csv", [{k: v for k, v in vars(p).items()} for p in photos.load_pool()])


def contact_sheet(args: argparse.Namespace, crop: int = 256, thumb: int = 256) -> Path:
    """results/photos/contact_sheet.png: a row per look: the look of the 4K photo and `mobilepicasso`,
    downscaled, then the same 1:1 crop of both at `long_side` (3840). The photo is scikit-image's
    astronaut (NASA, public domain; in no training batch), so that no pool photo is ever committed; it
    is 512 px, so its 4K crops show colour fidelity, not detail (the table's photos show detail)."""
    from PIL import Image, ImageDraw
    from skimage import data

    from pipeline import edit

    long_side = getattr(args, "long_side", None) or 3840
    image = Image.fromarray(data.astronaut())
    rows = [("source", None)] + [(look, look) for look in pe.LOOKS]
    sheet = draw = None
    for r, (label, look) in enumerate(rows):
        ex = pe.sample(image, "skimage:astronaut", 0, look=look or "brighter", whole=True)
        w, h = ex.size(long_side)
        src = ex.source(w, h)
        if look is None:
            images = [src, src]
        else:
            images = [ex.target(w, h), edit(src, pe.PHRASES[look][0], size=(w, h), models=str(args.models or args.out)).image]
        tw, th = thumb * w // max(w, h), thumb * h // max(w, h)
        if sheet is None:
            sheet = Image.new("RGB", (2 * tw + 2 * crop + 30, len(rows) * (max(th, crop) + 18)), "white")
            draw = ImageDraw.Draw(sheet)
        y = r * (max(th, crop) + 18)
        box = (w // 2 - crop // 2, h // 4 - crop // 2, w // 2 + crop // 2, h // 4 + crop // 2)
        caption = ("source: scikit-image astronaut (NASA, public domain)" if look is None else
                   f'{label}: "{pe.PHRASES[look][0]}"  target | mobilepicasso (whole, then 1:1 crops at {w}x{h})')
        draw.text((4, y + 2), caption, fill="black")
        for c, im in enumerate(images):
            sheet.paste(im.resize((tw, th), Image.Resampling.LANCZOS), (c * (tw + 5), y + 16))
            sheet.paste(im.crop(box), (2 * tw + 20 + c * (crop + 5), y + 16))
    out = Path(args.results).parent / "photos" / "contact_sheet.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def oracle_rows(photo: photos.Photo, long_side: int, models: str, looks: tuple[str, ...]) -> list[dict]:
    """Where the photo error comes from: the colour transfer of `mobilepicasso` fed (a) the exact look at
    the edit size, (b) that look through the set's autoencoder (the best any editor in this latent
    space can hand over), (c) as (b) but fitted from the source through the autoencoder too."""
    import torch
    from PIL import Image

    from pipeline.model_sets import load_model_set
    from pipeline.stages.edit import standard_size
    from pipeline.stages.transfer import fit_affine_colour

    vae = load_model_set(models).edit_pipeline.vae
    image = photos.open_photo(str(photo.file()))

    def t01(im) -> torch.Tensor:
        return torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None]

    @torch.no_grad()
    def round_trip(x: torch.Tensor) -> torch.Tensor:
        return (vae.decode(vae.encode(x * 2 - 1).latents).sample.clamp(-1, 1) + 1) / 2

    rows = []
    for look in looks:
        ex = pe.sample(image, photo.id, 0, look=look, whole=True)
        w, h = ex.size(long_side)
        src, tgt = ex.source(w, h), np.asarray(ex.target(w, h))
        small = t01(src.resize(standard_size(w, h, 128, 32), Image.Resampling.LANCZOS))
        exact = t01(pe.apply_look(Image.fromarray((small[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)), look))
        full = np.asarray(src, np.float32) / 255
        for name, guide, edited in (("exact look", small, exact), ("look via autoencoder", small, round_trip(exact)),
                                    ("both via autoencoder", round_trip(small), round_trip(exact))):
            out = fit_affine_colour(guide, edited).apply(full, (w, h))
            rows.append({"photo": photo.id, "look": look, "size": f"{w}x{h}", "method": name, "seconds": 0.0,
                         "psnr": psnr(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), tgt)})
    return rows


def _oracle_worker(job) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    return oracle_rows(*job)


def oracle(args: argparse.Namespace) -> None:
    """`--tables photo-oracle`: results/photos/oracle_<long_side>.csv (+ _runs), per look and input."""
    found = _test_photos(args, "oracle")
    if found is None:
        return
    pool, long_side, out = found
    jobs = [(p, long_side, str(args.models or args.out), pe.LOOKS) for p in pool]
    rows = []
    with get_context("spawn").Pool(int(os.environ.get("EVAL_WORKERS", "2"))) as mp:
        for new in mp.imap(_oracle_worker, jobs):
            rows.extend(new)
    write_csv(out / f"oracle_{long_side}_runs.csv", rows)
    table = []
    for look in [*pe.LOOKS, "all"]:
        for method in dict.fromkeys(r["method"] for r in rows):
            scores = [r["psnr"] for r in rows if r["method"] == method and look in ("all", r["look"])]
            lo, hi = mean_ci(scores)
            table.append({"look": look, "input": method, "n": len(scores), "psnr": float(np.mean(scores)),
                          "psnr_ci95_low": lo, "psnr_ci95_high": hi})
    write_csv(out / f"oracle_{long_side}.csv", table)
