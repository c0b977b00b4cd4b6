"""Train the artifact detector M (a miniature PAL4VST) on SynthEdit targets with injected artifacts.

Positives: per-pixel masks of the injected artifacts (blobs, duplicated fragments, smears, warps,
colour bleeding); negatives: clean targets of the same edits. Inputs are lightly blurred and noised
half the time so M judges decoder outputs, not only crisp renders.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import mini_architecture as arch
from pipeline import synthedit as se
from pipeline.train.common import Budget, Checkpoint, Postfix, device, seed_everything, to_tensor, train_loop
from pipeline.train.data import train_seed


def detector_batch(rng: np.random.Generator, n: int, size: int = 128, split: str = "train"):
    images, masks = [], []
    for _ in range(n):
        seed = train_seed(rng) if split == "train" else int(rng.integers(*se.SPLITS[split]))
        fraction = 1.0 if rng.random() < 0.6 else 0.0
        ex = se.sample(seed, artifact_fraction=fraction)
        if split != "train" and fraction:  # held-out seeds never carry artifacts: add them for evaluation
            ex = se.EditExample(**{**ex.__dict__, "artifacts": (se.Artifact(se.ARTIFACTS[int(rng.integers(5))],
                                                                              int(rng.integers(1 << 30))),)})
        images.append(ex.target(size, size))
        masks.append(ex.artifact_mask(size, size))
    x = to_tensor(images)
    y = torch.from_numpy(np.stack(masks)).float()[:, None]
    return x, y


def degrade(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < 0.5:
        k = torch.tensor([1.0, 2.0, 1.0]) / 4
        k2 = (k[:, None] * k[None]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
        x = x + float(rng.uniform(0, 0.03)) * torch.randn_like(x)
    return x.clamp(-1, 1)


def train(args: argparse.Namespace):
    dev = device()
    seed_everything(args.seed)
    det = arch.detector().to(dev).train()
    opt = torch.optim.AdamW(det.parameters(), lr=args.lr)
    ckpt = Checkpoint(args.run_dir, "detector")
    step, elapsed = ckpt.load(model=det, opt=opt) if args.resume else (0, 0.0)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 3])

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        x, y = detector_batch(rng, args.batch_size)
        x, y = degrade(x, rng).to(dev), y.to(dev)
        logits = det(x)
        loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(8.0, device=dev))
        return loss, {"loss": (loss, ".4f")}

    step = train_loop("detector", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
                      state=dict(model=det, opt=opt), batch_loss=batch_loss)
    det.eval()
    with torch.no_grad():
        x, y = detector_batch(np.random.default_rng(123), 32, split="validation")
        p = det.probabilities(x.to(dev)) > 0.5
        yb = y.to(dev) > 0.5
        iou = ((p & yb).sum() / (p | yb).sum().clamp_min(1)).item()
    print(f"detector: {step} steps, {budget.elapsed() / 60:.1f} min, validation IoU {iou:.3f}")
    if args.out:
        det.save_pretrained(Path(args.out) / "detector")
    return det
