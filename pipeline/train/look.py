"""Train the look model (`python -m pipeline.train look`): global tone looks as one colour map.

Examples: SynthEdit scenes of every family (its global looks: black and white, night, snow, warmer)
and PhotoEdit windows of the *train* photos (ten looks and SynthEdit's shapes on photos), as 32-px
thumbnails. The look head is trained where the instruction is a look: the mean squared error between
the predicted map applied to the source thumbnail (clipped, as an image is) and the target
thumbnail. The gate is trained on every example: is the instruction a global look? The text encoder
is the editor's own, frozen, as for the edit-region model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import photos
from pipeline import synthedit as se
from pipeline.models.look import LookModel, LookPrediction
from pipeline.stages.region import encode_text
from pipeline.train.common import Budget, Checkpoint, Postfix, device, psnr, seed_everything, train_loop
from pipeline.train.photos import photo_examples

PHOTO_SIDE = 640     # photos are decoded once and reduced to this long side before windows are cut
LOOK_WEIGHT = 100.0  # the colour-map MSE (in [0, 1] units) against the gate's BCE


def synthedit_rows(split: str, n: int, side: int) -> list[tuple]:
    rows = []
    for seed in se.split_seeds(split, n):
        ex = se.sample(seed, artifact_fraction=0.0)
        rows.append((np.asarray(ex.source(side, side)), np.asarray(ex.target(side, side, artifacts=False)),
                     ex.instruction, ex.family == "global", f"synthedit:{ex.family}"))
    return rows


def photo_rows(split: str, n: int, side: int, seed: int) -> list[tuple]:
    """n PhotoEdit examples spread over the split's photos (train photos only ever reach training)."""
    return [(np.asarray(ex.source(side, side)), np.asarray(ex.target(side, side)), ex.instruction,
             ex.look is not None, f"photo:{ex.look or ex.family}")
            for ex in photo_examples(n, seed, split, max_side=PHOTO_SIDE)]


def tensors(rows: list[tuple], pipe) -> dict:
    """Stacked thumbnails in [0, 1], per-row index into the unique instructions' token states, labels."""
    texts = sorted({r[2] for r in rows})
    index = {t: i for i, t in enumerate(texts)}
    states, masks = zip(*(encode_text(pipe, texts[i:i + 512]) for i in range(0, len(texts), 512)))
    to01 = lambda key: torch.from_numpy(np.stack([r[key] for r in rows])).permute(0, 3, 1, 2).float() / 255
    return {"src": to01(0), "tgt": to01(1), "text": torch.tensor([index[r[2]] for r in rows]),
            "states": torch.cat(states), "mask": torch.cat(masks),
            "is_look": torch.tensor([float(r[3]) for r in rows]), "kind": [r[4] for r in rows]}


def losses(model: LookModel, data: dict, idx: torch.Tensor, dev) -> tuple[torch.Tensor, torch.Tensor, LookPrediction]:
    src, tgt, is_look = data["src"][idx].to(dev), data["tgt"][idx].to(dev), data["is_look"][idx].to(dev)
    text = data["text"][idx]
    logit, matrix, offset = model(src * 2 - 1, data["states"][text].to(dev), data["mask"][text].to(dev))
    pred = LookPrediction(torch.sigmoid(logit), matrix, offset)
    mse = ((pred.apply(src).clamp(0, 1) - tgt) ** 2).mean((1, 2, 3))
    look = (mse * is_look).sum() / is_look.sum().clamp_min(1)
    return F.binary_cross_entropy_with_logits(logit, is_look), look, pred


@torch.no_grad()
def validate(model: LookModel, data: dict) -> dict[str, float]:
    """Gate accuracy over all examples; PSNR of the applied map on the look examples, per kind."""
    model.eval()
    idx = torch.arange(len(data["src"]))
    _, _, pred = losses(model, data, idx, next(model.parameters()).device)
    model.train()
    correct = ((pred.probability.cpu() > 0.5).float() == data["is_look"]).float()
    scores = psnr(pred.apply(data["src"]).clamp(0, 1) * 2 - 1, data["tgt"] * 2 - 1)
    out = {"gate_accuracy": float(correct.mean())}
    for kind in sorted(set(data["kind"])):
        sel = [i for i, k in enumerate(data["kind"]) if k == kind]
        if data["is_look"][sel].all():
            out[kind] = float(scores[sel].mean())
    return out


def train(args: argparse.Namespace) -> LookModel:
    from pipeline import mini_architecture as arch
    from pipeline.model_sets import load_local_set

    dev = device()
    seed_everything(args.seed)
    pipe = load_local_set(args.out).edit_pipeline
    side = arch.look().config.thumbnail
    pool_path = Path(args.run_dir) / "look" / f"pool-{args.pool}.pt"
    if pool_path.is_file():
        rows, val_rows = torch.load(pool_path, weights_only=False)
    else:
        n_photos = round(0.5 * args.pool) if photos.load_pool(split="train") else 0
        rows = synthedit_rows("train", args.pool - n_photos, side) + photo_rows("train", n_photos, side, args.seed)
        val_rows = synthedit_rows("validation", 400, side) + photo_rows("validation", 300, side, args.seed + 1)
        pool_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save((rows, val_rows), pool_path)
    data, val = tensors(rows, pipe), tensors(val_rows, pipe)
    model = arch.look().to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    ckpt = Checkpoint(args.run_dir, "look")
    step, elapsed = ckpt.load(model=model, opt=opt) if args.resume else (0, 0.0)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 13])

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        gate, look, _ = losses(model, data, torch.from_numpy(rng.integers(0, len(data["src"]), args.batch_size)), dev)
        return gate + LOOK_WEIGHT * look, {"gate": (gate, ".4f"), "look": (look, ".5f")}

    def on_step(step: int) -> None:
        if step % 500 == 0:
            print(f"look step {step}: validation {validate(model, val)}", flush=True)

    step = train_loop("look", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
                      state=dict(model=model, opt=opt), batch_loss=batch_loss, on_step=on_step)
    print(f"look: {step} steps, {budget.elapsed() / 60:.1f} min, validation {validate(model, val)}")
    if args.out:
        model.eval().save_pretrained(Path(args.out) / "look")
    return model
