"""Train the edit-region model on SynthEdit's exact edit masks (`python -m pipeline.train region`).

Targets: recolour/remove the named shape, add where the new shape goes, background the
background, global everything; plus a share of instructions that name something the scene lacks,
whose target is empty (the pipeline then returns the source unchanged). Inputs are sources at half
the edit size the editor sees (1:1, 16:9 and 4:3 buckets); the loss is BCE + soft Dice, plus auxiliary
cross-entropies of the shape kind under every pixel and of the kind the instruction names, BCE + Dice
of the placed prior alone on the edits that add something (where is said only in words), BCE of
"the edit adds something new", and, for the region's colour map, the L1 error of the predicted map applied to the source against the target
inside the true region and a BCE of whether the edit is such a map (every family but remove). The
text encoder is the editor's own, frozen, so the region model adds no vocabulary of its own.

Then the border refiner (`EditRegionModel.refine`), with everything else frozen: sources at the
edit size, the coarse model's own predictions at half of it as input (on train seeds the coarse
model never saw, so its errors are the ones it makes at run time), BCE + Dice against the exact
mask. `--only refiner` runs this stage alone on the weights in `--init-from`; `--only colour` fits the
colour-map heads alone (everything else frozen) on the pool.
"""
from __future__ import annotations

import argparse
import collections
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pipeline import synthedit as se
from pipeline.models import EditRegionModel
from pipeline.stages.region import encode_text
from pipeline.train.common import (
    Budget,
    Checkpoint,
    Postfix,
    device,
    seed_everything,
    train_loop,
)
from pipeline.train.data import edit_size, flat_added_shape
from pipeline.train.photos import photo_count, region_rows

ABSENT_SHARE = 0.08
REGION_RESOLUTION = 64  # half the edit size: 4x cheaper to train, shapes still 15-30 px across
EDIT_RESOLUTION, EDIT_MULTIPLE = 128, 32  # the edit size the refiner works at (the mini set's)
REFINE_SEED_OFFSET = 500_000  # refiner pool: train seeds far beyond any region pool
REFINE_POOL, REFINE_STEPS, REFINE_BATCH, REFINE_LR = 6000, 1500, 16, 2e-3


def named_kind(thing: str | None) -> int:
    """Auxiliary text label: 1 + the KINDS index of the shape kind an instruction names, 0 for none."""
    return se.KINDS.index(thing) + 1 if thing in se.KINDS else 0


def region_example(seed: int, absent: bool = False, nouns: str = "train") -> tuple:
    """(source uint8 at the region size, edit mask bool, instruction, family, kind map int8, named kind,
    target uint8)."""
    ex = se.sample(seed)
    w, h = edit_size(ex.source_scene.aspect, REGION_RESOLUTION, 16)
    image = np.asarray(ex.source(w, h))
    kinds = se.kind_map(ex.source_scene, w, h)
    if absent:
        instruction, thing = se.absent_instruction(ex, se._rng("absent", seed), nouns)
        return image, np.zeros((h, w), bool), instruction, "absent", kinds, named_kind(thing), image
    if ex.family in ("recolour", "remove"):
        thing = (ex.removed or ex.target_scene.shapes[ex.changed[0]]).kind if ex.family == "remove" or ex.changed else None
    elif ex.family == "add":
        thing = ex.target_scene.shapes[ex.changed[0]].kind
    else:
        thing = None
    mask, target = ex.edit_mask(w, h), np.asarray(ex.target(w, h))
    return image, mask, ex.instruction, ex.family, kinds, named_kind(thing), flat_added_shape(ex, target, mask)


def _render(job: tuple[int, bool, str]):
    return region_example(*job)


def build_pool(seeds: list[int], absent_share: float, seed: int, nouns: str = "train", workers: int = 2) -> list:
    rng = np.random.default_rng([seed, 17])
    jobs = [(s, bool(rng.random() < absent_share), nouns) for s in seeds]
    with Pool(workers) as pool:
        return pool.map(_render, jobs, chunksize=64)


def tensors(rows: list, pipe) -> dict:
    """Group rows by size into stacked tensors: {size: (images, masks, states, text_mask, families, kind maps,
    named kinds, targets)}."""
    groups = collections.defaultdict(list)
    for row in rows:
        groups[row[0].shape[:2]].append(row)
    out = {}
    for size, items in groups.items():
        x = torch.from_numpy(np.stack([r[0] for r in items])).permute(0, 3, 1, 2).float() / 127.5 - 1
        m = torch.from_numpy(np.stack([r[1] for r in items])).float()[:, None]
        states, mask = zip(*(encode_text(pipe, [r[2] for r in items[i:i + 512]]) for i in range(0, len(items), 512)))
        kinds = torch.from_numpy(np.stack([r[4] for r in items])).long()
        named = torch.tensor([r[5] for r in items])
        y = torch.from_numpy(np.stack([r[6] for r in items])).permute(0, 3, 1, 2).float() / 127.5 - 1
        out[size] = (x, m, torch.cat(states), torch.cat(mask), [r[3] for r in items], kinds, named, y)
    return out


def region_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid()
    inter = (p * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (p.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


AUX_WEIGHT = 1.0
PLACE_WEIGHT, COLOUR_WEIGHT, PLACE_BATCH = 1.0, 4.0, 64


def base_family(family: str) -> str:
    """"photo:add" -> "add": photo triples are labelled like their SynthEdit families."""
    return family.split(":")[-1]


def colour_loss(colour: tuple, source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                families: list[str]) -> torch.Tensor:
    """L1 of the predicted colour map applied to the source against the target inside the true region
    (edits that are a colour map), plus BCE of P(the edit is a colour map) (every edit with a region)."""
    is_map, matrix, offset = colour
    src01, tgt01 = (source + 1) / 2, (target + 1) / 2
    mapped = torch.einsum("boi,bihw->bohw", matrix, src01) + offset[..., None, None]
    label = torch.tensor([base_family(f) not in ("remove", "absent") for f in families], dtype=mask.dtype, device=mask.device)
    has_region = (mask.flatten(1).sum(1) > 0).to(mask.dtype)
    err = ((mapped - tgt01).abs() * mask).flatten(1).sum(1) / (3 * mask.flatten(1).sum(1)).clamp_min(1)
    fit = (err * label * has_region).sum() / (label * has_region).sum().clamp_min(1)
    bce = (F.binary_cross_entropy_with_logits(is_map, label, reduction="none") * has_region).sum() / has_region.sum().clamp_min(1)
    return fit + 0.1 * bce




def auxiliary_loss(pixel_kinds: torch.Tensor, text_kinds: torch.Tensor, kinds: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the per-pixel shape kind and of the kind the instruction names: dense labels
    that teach the two sides of the dot product their shared vocabulary fast."""
    return F.cross_entropy(pixel_kinds, kinds) + F.cross_entropy(text_kinds, named)


@torch.no_grad()
def iou_by_family(model: EditRegionModel, data: dict, threshold: float = 0.5) -> dict[str, float]:
    """Mean IoU per family at the region size (an empty prediction of an empty target scores 1)."""
    model.eval()
    scores = collections.defaultdict(list)
    for x, m, states, tmask, fams, *_ in data.values():
        for i in range(0, len(x), 64):
            p = model.probabilities(x[i:i + 64], states[i:i + 64], tmask[i:i + 64]) > threshold
            t = m[i:i + 64] > 0.5
            inter = (p & t).flatten(1).sum(1).float()
            union = (p | t).flatten(1).sum(1).float()
            iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            for fam, v in zip(fams[i:i + 64], iou.tolist()):
                scores[fam].append(v)
    model.train()
    return {fam: float(np.mean(v)) for fam, v in sorted(scores.items())}


@torch.no_grad()
def colour_by_family(model: EditRegionModel, data: dict) -> dict[str, tuple[float, float]]:
    """Per family, as the pipeline runs it (the map pooled over the *predicted* region): the mean absolute
    error in 8-bit levels of the predicted map inside the true region, and the accuracy of P(colour map)."""
    model.eval()
    errors, right = collections.defaultdict(list), collections.defaultdict(list)
    for x, m, states, tmask, fams, *_, y in data.values():
        for i in range(0, len(x), 64):
            _, colour, _ = model.predict(x[i:i + 64], states[i:i + 64], tmask[i:i + 64])
            mapped = colour.apply((x[i:i + 64] + 1) / 2)
            mask = m[i:i + 64]
            err = ((mapped - (y[i:i + 64] + 1) / 2).abs() * mask).flatten(1).sum(1) / (3 * mask.flatten(1).sum(1)).clamp_min(1)
            for fam, e, p, n in zip(fams[i:i + 64], err.tolist(), colour.probability.tolist(), mask.flatten(1).sum(1).tolist()):
                if n > 0:
                    family = base_family(fam)
                    right[fam].append((p > 0.5) == (family != "remove"))
                    if family != "remove":
                        errors[fam].append(255 * e)
    model.train()
    return {fam: (round(float(np.mean(errors[fam])), 2) if errors[fam] else float("nan"), round(float(np.mean(v)), 3))
            for fam, v in sorted(right.items())}


def refine_example(seed: int) -> tuple:
    """(source uint8 at the edit size, source at half of it, exact mask at the edit size, instruction, family)
    of a SynthEdit edit whose region is something already there (not an added shape)."""
    ex = se.sample(seed)
    w, h = edit_size(ex.source_scene.aspect, EDIT_RESOLUTION, EDIT_MULTIPLE)
    return (np.asarray(ex.source(w, h)), np.asarray(ex.source(max(8, w // 2), max(8, h // 2))), ex.edit_mask(w, h),
            ex.instruction, ex.family)


@torch.no_grad()
def refine_pool(model: EditRegionModel, pipe, seeds: list[int], workers: int = 2) -> dict:
    """{size: (images, exact masks, coarse probabilities at half the size, families)}, add edits left out."""
    with Pool(workers) as pool:
        rows = [r for r in pool.map(refine_example, seeds, chunksize=64) if r[4] != "add"]
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r[0].shape[:2]].append(r)
    model.eval()
    out = {}
    for size, items in groups.items():
        x = torch.from_numpy(np.stack([r[0] for r in items])).permute(0, 3, 1, 2).float() / 127.5 - 1
        half = torch.from_numpy(np.stack([r[1] for r in items])).permute(0, 3, 1, 2).float() / 127.5 - 1
        m = torch.from_numpy(np.stack([r[2] for r in items])).float()[:, None]
        coarse = []
        for i in range(0, len(items), 256):
            states, tmask = encode_text(pipe, [r[3] for r in items[i:i + 256]])
            coarse.append(model.probabilities(half[i:i + 256], states, tmask))
        out[size] = (x, m, torch.cat(coarse), [r[4] for r in items])
    return out


@torch.no_grad()
def refined_iou_by_family(model: EditRegionModel, data: dict) -> dict[str, tuple[float, float]]:
    """Per family: mean IoU at the edit size of the coarse region (upsampled) and of the refined one."""
    model.eval()
    scores = collections.defaultdict(list)
    for x, m, coarse, fams in data.values():
        for i in range(0, len(x), 64):
            t = m[i:i + 64] > 0.5
            up = F.interpolate(coarse[i:i + 64], size=t.shape[-2:], mode="bilinear", align_corners=False) > 0.5
            ref = model.refine(x[i:i + 64], coarse[i:i + 64]) > 0
            for fam, a, b in zip(fams[i:i + 64], _iou(up, t).tolist(), _iou(ref, t).tolist()):
                scores[fam].append((a, b))
    model.train()
    return {f: tuple(round(float(v), 3) for v in np.mean(s, 0)) for f, s in sorted(scores.items())}


def _iou(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    inter, union = (p & t).flatten(1).sum(1).float(), (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def fit_refiner(model: EditRegionModel, pipe, args: argparse.Namespace) -> None:
    """Train the border refiner alone (resumable: checkpoint `region-refine`), the rest of the model frozen."""
    dev = device()
    pool = refine_pool(model, pipe, se.split_seeds("train", min(REFINE_POOL, args.pool), offset=REFINE_SEED_OFFSET))
    val = refine_pool(model, pipe, se.split_seeds("validation", min(300, max(32, args.pool)), offset=10_000))
    print(f"refiner: coarse / refined IoU at the edit size before {refined_iou_by_family(model, val)}", flush=True)
    model.requires_grad_(False).to(dev)
    model.refiner.requires_grad_(True).train()
    opt = torch.optim.AdamW(model.refiner.parameters(), lr=REFINE_LR, weight_decay=1e-4)
    ckpt = Checkpoint(args.run_dir, "region-refine")
    step, elapsed = ckpt.load(model=model.refiner, opt=opt) if args.resume else (0, 0.0)
    steps = args.refine_steps or min(REFINE_STEPS, args.steps)  # a smoke run's --steps 2 also holds here
    refine_args = argparse.Namespace(**{**vars(args), "steps": steps, "lr": REFINE_LR})
    budget = Budget(steps, None, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 13])
    sizes = list(pool)
    weights = np.array([len(pool[s][0]) for s in sizes], float)

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        x, m, coarse, _ = pool[sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]]
        idx = torch.from_numpy(rng.integers(0, len(x), REFINE_BATCH))
        loss = region_loss(model.refine(x[idx].to(dev), coarse[idx].to(dev)), m[idx].to(dev))
        return loss, {"loss": (loss, ".4f")}

    def on_step(step: int) -> None:
        if step % 500 == 0:
            print(f"refiner step {step}: coarse / refined IoU {refined_iou_by_family(model, val)}", flush=True)

    train_loop("region-refine", opt=opt, budget=budget, step=step, args=refine_args, ckpt=ckpt,
               state=dict(model=model.refiner, opt=opt), batch_loss=batch_loss, on_step=on_step)
    print(f"refiner: {budget.elapsed() / 60:.1f} min, coarse / refined IoU {refined_iou_by_family(model, val)}", flush=True)
    model.eval()


def fit_colour_head(model: EditRegionModel, data: dict, val: dict, args: argparse.Namespace) -> None:
    """Fit the colour-map heads alone (resumable: checkpoint `region-colour`), the rest frozen: the
    region-colour part of the joint loss, pooled over the true region as in the joint steps."""
    dev = device()
    model.requires_grad_(False).to(dev).train()
    params = [*model.colour_mlp.parameters(), *model.colour_map.parameters(), *model.is_colour_map.parameters()]
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    ckpt = Checkpoint(args.run_dir, "region-colour")
    step, elapsed = ckpt.load(model=model, opt=opt) if args.resume else (0, 0.0)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 19])
    sizes = list(data)
    weights = np.array([len(data[s][0]) for s in sizes], float)
    print(f"colour heads: before {colour_by_family(model, val)}", flush=True)

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        x, m, states, tmask, fams, _, _, y = data[sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]]
        idx = torch.from_numpy(rng.integers(0, len(x), args.batch_size))
        source, mask = x[idx].to(dev), m[idx].to(dev)
        *_, colour, _ = model(source, states[idx].to(dev), tmask[idx].to(dev), return_aux=True, colour_weights=mask)
        loss = colour_loss(colour, source, y[idx].to(dev), mask, [fams[i] for i in idx.tolist()])
        return loss, {"loss": (loss, ".4f")}

    train_loop("region-colour", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
               state=dict(model=model, opt=opt), batch_loss=batch_loss)
    print(f"colour heads: {budget.elapsed() / 60:.1f} min, after {colour_by_family(model, val)}", flush=True)


PLACE_STEPS, PLACE_LR = 1500, 2e-3


def fit_placed_prior(model: EditRegionModel, data: dict, adds: dict, rng: np.random.Generator, dev) -> None:
    """Fit the placed prior alone first: it reads only the instruction, so its own optimiser and batches
    of additions take it where it has to be in a minute, before the joint steps start."""
    params = [model.place_queries, *model.place_pool.parameters(), *model.place.parameters()]
    opt = torch.optim.AdamW(params, lr=PLACE_LR, weight_decay=1e-4)
    sizes = [s for s in data if len(adds[s])]
    weights = np.array([len(adds[s]) for s in sizes], float)
    for _ in range(PLACE_STEPS if sizes else 0):
        size = sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]
        x, m, states, tmask = data[size][:4]
        a = adds[size][torch.from_numpy(rng.integers(0, len(adds[size]), PLACE_BATCH))]
        loss = region_loss(model.placed_prior(states[a].to(dev), tmask[a].to(dev), tuple(x.shape[-2:])), m[a].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _weights(init: Path) -> dict:
    """An edit-region state dict from a set folder or a training checkpoint."""
    if init.is_dir():
        return load_file(init / "edit_region" / "diffusion_pytorch_model.safetensors")
    return torch.load(init, map_location="cpu", weights_only=False)["model"]


def train(args: argparse.Namespace) -> EditRegionModel:
    from pipeline import mini_architecture as arch
    from pipeline.model_sets import load_local_set

    dev = device()
    seed_everything(args.seed)
    pipe = load_local_set(args.out).edit_pipeline
    model = arch.edit_region().to(dev).train()
    only = getattr(args, "only", None)
    if only == "refiner":
        model.load_state_dict(_weights(Path(args.init_from or args.out)), strict=False)  # the refiner starts fresh
        fit_refiner(model, pipe, args)
        if args.out:
            model.save_pretrained(Path(args.out) / "edit_region")
        return model
    ckpt = Checkpoint(args.run_dir, "region")
    pool_path = Path(args.run_dir) / "region" / f"pool-v4-{args.pool}.pt"
    if pool_path.is_file():
        rows = torch.load(pool_path, weights_only=False)
    else:
        rows = build_pool(se.split_seeds("train", args.pool), ABSENT_SHARE, args.seed)
        pool_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(rows, pool_path)
    n_photos = photo_count(args)
    photo_path = pool_path.with_name(f"photos-v4-{n_photos}.pt")
    if n_photos and photo_path.is_file():
        rows = rows + torch.load(photo_path, weights_only=False)
    elif n_photos:
        photo_rows = region_rows(n_photos, args.seed, resolution=REGION_RESOLUTION, kind_of=named_kind)
        torch.save(photo_rows, photo_path)
        rows = rows + photo_rows
    data = tensors(rows, pipe)
    val_rows = build_pool(se.split_seeds("validation", min(300, max(32, args.pool))), ABSENT_SHARE, args.seed + 1)
    val = tensors(val_rows + region_rows(min(200, n_photos), args.seed + 1, "validation",
                                         resolution=REGION_RESOLUTION, kind_of=named_kind), pipe)
    if only == "colour":
        model.load_state_dict(_weights(Path(args.init_from or args.out)))
        fit_colour_head(model, data, val, args)
        if args.out:
            model.eval().save_pretrained(Path(args.out) / "edit_region")
        return model
    if getattr(args, "init_from", None):  # continue from an earlier run's (or a set's) weights; new parameters start fresh
        old = _weights(Path(args.init_from))
        new = model.state_dict()
        model.load_state_dict({k: v for k, v in old.items() if k in new and new[k].shape == v.shape}, strict=False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, elapsed = ckpt.load(model=model, opt=opt) if args.resume else (0, 0.0)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 11])
    sizes = list(data)
    weights = np.array([len(data[s][0]) for s in sizes], float)
    adds = {s: torch.tensor([i for i, f in enumerate(data[s][4]) if base_family(f) == "add"], dtype=torch.long)
            for s in sizes}
    if step == 0:
        fit_placed_prior(model, data, adds, rng, dev)

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        size = sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]
        x, m, states, tmask, fams, kinds, named, y = data[size]
        idx = torch.from_numpy(rng.integers(0, len(x), args.batch_size))
        families = [fams[i] for i in idx.tolist()]
        source, mask = x[idx].to(dev), m[idx].to(dev)
        logits, pixel_kinds, text_kinds, colour, adds_new = model(
            source, states[idx].to(dev), tmask[idx].to(dev), return_aux=True, colour_weights=mask)
        is_add = torch.tensor([base_family(f) == "add" for f in families], dtype=mask.dtype, device=dev)
        loss = (region_loss(logits, mask) + 0.1 * F.binary_cross_entropy_with_logits(adds_new, is_add)
                + AUX_WEIGHT * auxiliary_loss(pixel_kinds, text_kinds, kinds[idx].to(dev), named[idx].to(dev))
                + COLOUR_WEIGHT * colour_loss(colour, source, y[idx].to(dev), mask, families))
        if len(adds[size]):  # the placed prior reads no pixel: its own, larger batch of additions costs little
            a = adds[size][torch.from_numpy(rng.integers(0, len(adds[size]), PLACE_BATCH))]
            placed = model.placed_prior(states[a].to(dev), tmask[a].to(dev), tuple(x.shape[-2:]))
            loss = loss + PLACE_WEIGHT * region_loss(placed, m[a].to(dev))
        return loss, {"loss": (loss, ".4f")}

    def on_step(step: int) -> None:
        if step % 500 == 0:
            print(f"region step {step}: validation IoU {iou_by_family(model, val)}, colour map error (levels) and "
                  f"accuracy {colour_by_family(model, val)}", flush=True)

    step = train_loop("region", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
                      state=dict(model=model, opt=opt), batch_loss=batch_loss, on_step=on_step)
    print(f"region: {step} steps, {budget.elapsed() / 60:.1f} min, validation IoU {iou_by_family(model, val)}, "
          f"colour map {colour_by_family(model, val)}")
    fit_refiner(model, pipe, args)
    if args.out:
        model.eval().save_pretrained(Path(args.out) / "edit_region")
    return model
