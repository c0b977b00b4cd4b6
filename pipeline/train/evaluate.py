"""Measure a model set on the SynthEdit test split and write `results/<set>/*.csv`.

Tables: edit quality per family (shipped sampler vs no edit vs the untrained model, with a paired
95% CI of the gain over no edit), sampler sweep (validation split), SR vs bicubic at x4/x8, end to
end at 3840x2160 (and a reduced size), and the ablation (plain / + filtering / + filtering +
hallucination-aware loss). Sample sizes: per-example PSNR varies by several dB between scenes, so 8
examples per family can show a gain of the wrong sign; the edit and ablation tables use 80 per family.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline import synthedit as se
from pipeline.bench.metrics import psnr
from pipeline.model_sets import ModelSet, load_local_set
from pipeline.stages.edit import standard_size
from pipeline.train.common import to_tensor
from pipeline.train.tables import paired_ci, write_csv


EDIT_N, SWEEP_N, SR_N = 400, 40, 8  # default examples: edit + ablation tables, sampler sweep, upscaler table


def to_image(pixels: torch.Tensor) -> Image.Image:
    """The first image of a (B, 3, H, W) tensor in [-1, 1]."""
    return Image.fromarray(((pixels[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())


@torch.no_grad()
def encode_image(models: ModelSet, image: Image.Image) -> torch.Tensor:
    return models.vae.encode(to_tensor([image])).latents * models.vae.config.scaling_factor


@torch.no_grad()
def decode_image(models: ModelSet, latent: torch.Tensor) -> Image.Image:
    return to_image(models.vae.decode(latent / models.vae.config.scaling_factor).sample)


def test_examples(n: int, split: str = "test", offset: int = 0) -> list[se.EditExample]:
    """n examples, families balanced (family i % 5), seeds from the split."""
    return [se.sample(s, family=se.FAMILIES[i % len(se.FAMILIES)]) for i, s in enumerate(se.split_seeds(split, n, offset))]


@torch.no_grad()
def edit_images(models: ModelSet, examples: list[se.EditExample], steps: int, text_guidance: float,
                image_guidance: float, seed: int = 0, batch: int = 16) -> list[Image.Image]:
    """The shipped sampler (stock diffusers IP2P pipeline) at the standard edit size of each example."""
    pipe = models.edit_pipeline
    info = models.info
    out: dict[int, Image.Image] = {}
    groups: dict[tuple[int, int], list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(standard_size(*ex.size(1000), info.edit_resolution, info.edit_multiple), []).append(i)
    for size, idx in groups.items():
        for j in range(0, len(idx), batch):
            chunk = idx[j:j + batch]
            lat = pipe([examples[i].instruction for i in chunk], image=[examples[i].source(*size) for i in chunk],
                       num_inference_steps=steps, guidance_scale=text_guidance, image_guidance_scale=image_guidance,
                       generator=torch.Generator().manual_seed(seed), output_type="latent").images
            pixels = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
            for i, im in zip(chunk, pipe.image_processor.postprocess(pixels, output_type="pil")):
                out[i] = im
    return [out[i] for i in range(len(examples))]


def edit_metrics(models: ModelSet, examples, images) -> list[dict]:
    """Per example: PSNR to the target, no-edit PSNR, M's artifact ratio, share of unedited pixels changed."""
    rows = []
    for ex, im in zip(examples, images):
        size = im.size
        tgt = ex.target(*size, artifacts=False)
        src = ex.source(*size)
        mask = ex.edit_mask(*size)
        diff = np.abs(np.asarray(im, np.int16) - np.asarray(src, np.int16)).max(axis=2)
        unedited = ~mask
        changed = float((diff[unedited] > 25).mean()) if unedited.any() else 0.0
        ratio = float(models.detector.artifact_ratio(to_tensor([im]))[0]) if models.detector is not None else float("nan")
        rows.append(dict(seed=ex.seed, family=ex.family, psnr=psnr(im, tgt), no_edit=psnr(src, tgt),
                         artifact_ratio=ratio, unedited_changed=changed))
    return rows


def by_family(rows: list[dict], keys: list[str]) -> list[dict]:
    out = []
    for fam in (*se.FAMILIES, "all"):
        sel = [r for r in rows if fam == "all" or r["family"] == fam]
        if sel:
            out.append({"family": fam, "n": len(sel), **{k: float(np.mean([r[k] for r in sel])) for k in keys}})
    return out


def untrained_set(path: Path) -> ModelSet:
    """The same set with the edit U-Net and text encoder at their seeded random initialisation."""
    from pipeline import mini_architecture as arch

    m = load_local_set(path)
    torch.manual_seed(0)
    m.edit_pipeline.unet = arch.edit_unet().eval()
    m.edit_pipeline.text_encoder = arch.text_encoder(m.edit_pipeline.tokenizer).eval()
    return m


def autoencoder_bounds(models: ModelSet, examples, images) -> list[dict]:
    """What the latent space allows, per example: the source and the target passed through the
    autoencoder, scored against the target. A latent editor cannot beat the second on average."""
    rows = []
    for ex, im in zip(examples, images):
        tgt = ex.target(*im.size, artifacts=False)
        rows.append(dict(family=ex.family,
                         no_edit_via_autoencoder=psnr(decode_image(models, encode_image(models, ex.source(*im.size))), tgt),
                         autoencoder_ceiling=psnr(decode_image(models, encode_image(models, tgt)), tgt)))
    return rows


def gain_ci(rows: list[dict], family: str) -> tuple[float, float]:
    """95% CI of the mean PSNR gain over no edit within `family` (or "all")."""
    sel = [r for r in rows if family == "all" or r["family"] == family]
    return paired_ci([r["psnr"] for r in sel], [r["no_edit"] for r in sel])


def evaluate_edit(models: ModelSet, untrained: ModelSet | None, n: int) -> tuple[list[dict], list[dict]]:
    """(per-family table, per-example rows)."""
    info = models.info
    exs = test_examples(n)
    images = edit_images(models, exs, info.steps, info.text_guidance, info.image_guidance)
    rows = edit_metrics(models, exs, images)
    for r, b in zip(rows, autoencoder_bounds(models, exs, images)):
        r.update(no_edit_via_autoencoder=b["no_edit_via_autoencoder"], autoencoder_ceiling=b["autoencoder_ceiling"])
    if untrained is not None:
        urows = edit_metrics(untrained, exs, edit_images(untrained, exs, info.steps, info.text_guidance, info.image_guidance))
        for r, u in zip(rows, urows):
            r["untrained_psnr"] = u["psnr"]
    keys = ["no_edit", "psnr", "artifact_ratio", "unedited_changed", "no_edit_via_autoencoder", "autoencoder_ceiling"]
    table = by_family(rows, keys + (["untrained_psnr"] if untrained is not None else []))
    for t in table:
        t["gain_over_no_edit"] = t["psnr"] - t["no_edit"]
        t["gain_ci95_low"], t["gain_ci95_high"] = gain_ci(rows, t["family"])
    return table, rows


def sampler_sweep(models: ModelSet, n: int, grid) -> list[dict]:
    exs = test_examples(n, split="validation")
    out = []
    for steps, tg, ig in grid:
        t0 = time.time()
        rows = edit_metrics(models, exs, edit_images(models, exs, steps, tg, ig))
        fam = {r["family"]: r["psnr"] for r in by_family(rows, ["psnr"])}
        out.append({"steps": steps, "text_guidance": tg, "image_guidance": ig, **{f"psnr_{k}": v for k, v in fam.items()},
                    "seconds": time.time() - t0})
    return out


@torch.no_grad()
def sr_image(models: ModelSet, lr_image: Image.Image, size: tuple[int, int], projection: str = "reference") -> Image.Image:
    """LR image -> latent -> (projector | reference) -> one-step SR over ACPT tiles -> tiled decode."""
    from pipeline.stages.projection import project

    up = models.upscaler
    z = encode_image(models, lr_image)
    cond_size = up.condition_size(*size)
    cond = project(models, z, cond_size, projection)
    hr = up.denoise(cond, up.plan(cond_size), generator=torch.Generator().manual_seed(0))
    return to_image(up.decode(hr)).crop((0, 0, *size))


def evaluate_sr(models: ModelSet, n: int, scales=(4, 8), lr_side: int = 128) -> list[dict]:
    """PSNR to the HR render. `bicubic_of_decoded_plus_true_detail` is an oracle bound: bicubic of the
    decoded latent plus the exact detail the HR render has over bicubic of the clean LR render. It is
    what an upscaler would score if it knew that detail perfectly but not what the latent lost."""
    rows = []
    for scale in scales:
        vals = {"bicubic": [], "bicubic_of_decoded": [], "bicubic_of_decoded_plus_true_detail": [], "latent_bicubic": [],
                "sr_reference": [], "sr_projector": [], "vae_ceiling": []}
        for ex in test_examples(n):
            w, h = ex.size(lr_side)
            lr = ex.target(w, h, artifacts=False)
            size = (w * scale, h * scale)
            gt = ex.target(*size, artifacts=False)
            bicubic = lr.resize(size, Image.Resampling.BICUBIC)
            vals["bicubic"].append(psnr(bicubic, gt))
            z = encode_image(models, lr)
            dec_up = decode_image(models, z).resize(size, Image.Resampling.BICUBIC)
            vals["bicubic_of_decoded"].append(psnr(dec_up, gt))
            detail = np.asarray(gt, np.float64) - np.asarray(bicubic, np.float64)
            oracle = np.clip(np.asarray(dec_up, np.float64) + detail, 0, 255)
            vals["bicubic_of_decoded_plus_true_detail"].append(psnr(oracle, gt))
            # the naive latent upscale: bicubic on the latent, decoded at the HR size
            latent = F.interpolate(z, size=models.upscaler.condition_size(*size), mode="bicubic", align_corners=False)
            vals["latent_bicubic"].append(psnr(to_image(models.upscaler.decode(latent)).crop((0, 0, *size)), gt))
            vals["sr_reference"].append(psnr(sr_image(models, lr, size, "reference"), gt))
            vals["sr_projector"].append(psnr(sr_image(models, lr, size, "learned"), gt))
            vals["vae_ceiling"].append(psnr(decode_image(models, encode_image(models, gt)), gt))
        rows.append({"scale": f"x{scale}", "n": n, **{k: float(np.mean(v)) for k, v in vals.items()}})
    return rows


def evaluate_end_to_end(models_path: str, examples, size: tuple[int, int], methods) -> list[dict]:
    from pipeline import edit

    rows = []
    for ex in examples:
        src = ex.source(*ex.size(512))
        gt = ex.target(*size, artifacts=False)
        for method in methods:
            t0 = time.time()
            r = edit(src, ex.instruction, method=method, size=size, models=models_path, seed=0)
            row = {"seed": ex.seed, "family": ex.family, "method": method, "size": f"{size[0]}x{size[1]}",
                   "seconds": time.time() - t0, "failed": r.report.failed}
            if r.image is not None:
                row["psnr"] = psnr(r.image, gt)
            else:
                row["psnr"] = float("nan")
                row["reason"] = (r.report.failure_reason or "")[:120]
            rows.append(row)
            print(row, flush=True)
    return rows


def carried_e2e_rows(path: Path, rerun: set[tuple[str, str]]) -> list[dict]:
    """The last run's rows of each (method, size) not re-run now. `--e2e-methods` re-runs only what a
    weight change touches: `ip2p-patchwise` and `ip2p-direct` use neither the projector nor the SR
    U-Net and take minutes per image (and `--quick` skips 4K)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r["method"], r["size"]) not in rerun]
    for r in rows:
        r.update(seed=int(r["seed"]), seconds=float(r["seconds"]), failed=r["failed"] == "True", psnr=float(r["psnr"]))
    return rows


def summarise_e2e(rows: list[dict]) -> list[dict]:
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        for m in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["method"] == m and r["size"] == size]
            ok = [r for r in sel if not r["failed"]]
            out.append({"size": size, "method": m, "n": len(sel), "finished": len(ok),
                        "psnr": float(np.mean([r["psnr"] for r in ok])) if ok else float("nan"),
                        "seconds": float(np.mean([r["seconds"] for r in sel]))})
    return out


E2E_METHODS = ("mobilepicasso", "ip2p-bicubic", "tiled-naive", "tiled-overlap", "ip2p-realesrgan", "ip2p-direct",
               "ip2p-patchwise")  # patchwise at 960x540 only: ~8 min per image at 4K
SWEEP = [(20, 1.0, 1.0), (20, 1.5, 1.2), (20, 1.5, 1.6), (20, 2.5, 1.5), (10, 1.0, 1.0)]


def choose_sampler(rows: list[dict]) -> dict:
    """The sweep row with the best mean PSNR over families (ties: fewer U-Net passes)."""
    def passes(r):
        return r["steps"] * (3 if r["text_guidance"] > 1 and r["image_guidance"] >= 1 else 1)
    return max(rows, key=lambda r: (round(r["psnr_all"], 2), -passes(r)))


TABLES = ("sweep", "edit", "ablation", "sr", "e2e", "region", "local")


def run(args: argparse.Namespace) -> None:
    path = Path(args.models or args.out)
    res = Path(args.results)
    tables = args.tables.split(",") if args.tables else TABLES
    rerun = args.e2e_methods.split(",") if args.e2e_methods else E2E_METHODS
    unknown = set(rerun) - set(E2E_METHODS)
    if unknown:  # else their old rows would be dropped and nothing re-run
        raise SystemExit(f"--e2e-methods: unknown {sorted(unknown)}; choose from {', '.join(E2E_METHODS)}")
    models = load_local_set(path)
    t0 = time.time()
    if "sweep" in tables:
        rows = sampler_sweep(models, args.eval_n or SWEEP_N, SWEEP)
        write_csv(res / "sampler_sweep.csv", rows)
        print(json.dumps(rows, indent=1), flush=True)
        if args.apply_sweep:
            best = choose_sampler(rows)
            cfg_path = path / "model_set.json"
            cfg = json.loads(cfg_path.read_text())
            cfg.update(steps=best["steps"], text_guidance=best["text_guidance"], image_guidance=best["image_guidance"])
            cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
            print("chosen sampler:", best, flush=True)
            models = load_local_set(path)
    if "edit" in tables:
        table, rows = evaluate_edit(models, untrained_set(path), args.eval_n or EDIT_N)
        write_csv(res / "edit_quality.csv", table)
        write_csv(res / "edit_quality_runs.csv", rows)
        print(json.dumps(table, indent=1), flush=True)
    if "ablation" in tables:
        rows = evaluate_ablation(path, Path(args.run_dir), args.eval_n or EDIT_N)
        if rows:
            write_csv(res / "ablation.csv", rows)
    if "sr" in tables:
        rows = evaluate_sr(models, args.eval_n or SR_N)
        write_csv(res / "upscaler.csv", rows)
        print(json.dumps(rows, indent=1), flush=True)
    if "e2e" in tables:
        methods = [m for m in E2E_METHODS if m in rerun]
        exs = [e for e in test_examples(40) if abs(e.source_scene.aspect - 16 / 9) < 1e-6][:3]
        rows = evaluate_end_to_end(str(path), exs, (960, 540), methods)
        if not args.quick:
            rows += evaluate_end_to_end(str(path), exs, (3840, 2160), [m for m in methods if m != "ip2p-patchwise"])
        rows = sorted(carried_e2e_rows(res / "end_to_end_runs.csv", {(r["method"], r["size"]) for r in rows}) + rows,
                      key=lambda r: (r["size"] != "960x540", E2E_METHODS.index(r["method"]), r["seed"]))
        write_csv(res / "end_to_end_runs.csv", rows)
        write_csv(res / "end_to_end.csv", summarise_e2e(rows))
    if "region" in tables:
        rows = evaluate_region(models, args.eval_n or EDIT_N)
        write_csv(res / "region_iou.csv", rows)
        print(json.dumps(rows, indent=1), flush=True)
    if "tune-local" in tables:
        from pipeline.train import evaluate_local

        evaluate_local.tune(args)
    if "local" in tables:
        from pipeline.train import evaluate_local

        evaluate_local.run(args)
    if "photos" in tables:
        from pipeline.train import evaluate_photos

        evaluate_photos.run(args)
    if "photo-oracle" in tables:
        from pipeline.train import evaluate_photos

        evaluate_photos.oracle(args)
    if "photo-sheet" in tables:
        from pipeline.train import evaluate_photos

        evaluate_photos.contact_sheet(args)
    if "examples" in tables:
        from pipeline.train import evaluate_local

        print(json.dumps(evaluate_local.example_grid(res, str(path)), indent=1), flush=True)
    print(f"evaluate: {time.time() - t0:.0f} s")


def evaluate_region(models: ModelSet, n: int) -> list[dict]:
    """Edit-region IoU per family on test seeds, plus instructions naming something absent (nouns no
    training negative used): an empty prediction scores 1 there. Two IoUs: the coarse model's at its
    own size (half the edit size), and that of the region the pipeline uses, at the edit size (refined
    on the source; a new shape's only upsampled). Also the region colour map's mean error inside the
    true region (8-bit levels) and how often the model rightly says whether the edit is a colour map
    (every family but remove)."""
    from pipeline.train.edit_region import ABSENT_SHARE, build_pool, colour_by_family, iou_by_family, tensors

    if models.edit_region is None:
        return []
    seeds = se.split_seeds("test", n)
    absent = seeds[: max(1, round(n * ABSENT_SHARE))]
    rows = build_pool(seeds, 0.0, 0) + build_pool(absent, 1.0, 0, nouns="held_out")
    data = tensors(rows, models.edit_pipeline)
    ious = iou_by_family(models.edit_region, data)
    colour = colour_by_family(models.edit_region, data)
    at_edit = edit_size_iou(models, seeds, absent)
    counts = {}
    for r in rows:
        counts[r[3]] = counts.get(r[3], 0) + 1
    nan = (float("nan"), float("nan"))
    return [{"family": f, "n": counts[f], "iou": round(v, 4), "iou_edit_size": round(at_edit[f], 4),
             "colour_map_error": colour.get(f, nan)[0], "colour_map_decision_accuracy": colour.get(f, nan)[1]}
            for f, v in ious.items()]


def edit_size_iou(models: ModelSet, seeds: list[int], absent: list[int]) -> dict[str, float]:
    """Mean IoU per family of the region the pipeline uses (`learned_region`) with the exact mask, at the
    edit size; `absent` seeds get an instruction naming something the scene lacks (empty target)."""
    from pipeline.stages.region import REGION_THRESHOLD, learned_region

    info, scores = models.info, {}
    for seed, is_absent in [(s, False) for s in seeds] + [(s, True) for s in absent]:
        ex = se.sample(seed)
        w, h = standard_size(*ex.size(1000), info.edit_resolution, info.edit_multiple)
        if is_absent:
            instruction, family, truth = (se.absent_instruction(ex, se._rng("absent", seed), "held_out")[0], "absent",
                                          np.zeros((h, w), bool))
        else:
            instruction, family, truth = ex.instruction, ex.family, ex.edit_mask(w, h)
        found = learned_region(models.edit_region, models.edit_pipeline, ex.source(w, h), instruction, (w, h))
        pred = found.mask[0, 0].numpy() > REGION_THRESHOLD
        union = (pred | truth).sum()
        scores.setdefault(family, []).append((pred & truth).sum() / union if union else 1.0)
    return {f: float(np.mean(v)) for f, v in scores.items()}


def models_from_checkpoint(path: Path, ckpt: Path, use_ema: bool = True) -> ModelSet:
    """The set at `path` with the edit U-Net / text encoder taken from a training checkpoint."""
    from pipeline.train.edit import load_checkpoint_models

    m = load_local_set(path)
    unet, te = load_checkpoint_models(ckpt, m.edit_pipeline.tokenizer, use_ema)
    m.edit_pipeline.unet, m.edit_pipeline.text_encoder = unet, te
    return m


def evaluate_ablation(path: Path, run_dir: Path, n: int) -> list[dict]:
    """plain vs + filtering vs + filtering + hallucination-aware loss, each branched from the same base.
    Each variant is compared with plain on the same examples: the mean paired difference and its 95% CI
    (paired t), for PSNR and for M's artifact ratio."""
    exs = test_examples(n)
    out = []
    plain = None
    for variant, label in (("plain", "plain"), ("filtered", "+ filtering"), ("full", "+ filtering + hallucination-aware loss")):
        ck = run_dir / f"edit-{variant}" / "ckpt.pt"
        if not ck.is_file():
            continue
        m = models_from_checkpoint(path, ck)
        info = m.info
        rows = edit_metrics(m, exs, edit_images(m, exs, info.steps, info.text_guidance, info.image_guidance))
        allr = by_family(rows, ["psnr", "artifact_ratio", "unedited_changed"])[-1]
        steps = torch.load(ck, map_location="cpu", weights_only=False)["step"]
        out.append({"variant": label, "finetune_steps": steps, "n": len(rows), "psnr": allr["psnr"],
                    "artifact_ratio": allr["artifact_ratio"], "unedited_changed": allr["unedited_changed"]})
        if variant == "plain":
            plain = rows
        elif plain is not None:
            for key in ("psnr", "artifact_ratio"):
                a, b = [r[key] for r in rows], [r[key] for r in plain]
                low, high = paired_ci(a, b)
                out[-1].update({f"{key}_vs_plain": float(np.mean(a) - np.mean(b)),
                                f"{key}_vs_plain_ci95_low": low, f"{key}_vs_plain_ci95_high": high})
        print(out[-1], flush=True)
    return out
