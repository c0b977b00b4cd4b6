"""Train the one-step latent SR U-Net (YONOS-SR style, stage 3).

Input: pure noise at t=999 (zero terminal SNR: it carries no signal) and the conditioning latent
at the HR latent size, made by the trained (frozen) projector from z_LR, which is what the shipped
pipeline feeds it; output: the clean HR latent (predicted as a correction to the condition), target
`encode(HR render)` of the same SynthEdit scene rendered at x2-x30 of the edit size (with
`--pixel-loss`, plus an L1 on the decoded pixels through the frozen decoder). Trained on
32-latent-px windows, so it runs at any size under ACPT tiles. One DDIM step with
prediction_type="sample" returns the prediction itself.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderTiny

from pipeline import mini_architecture as arch
from pipeline.models import LatentProjector
from pipeline.train.common import Budget, Checkpoint, Postfix, device, seed_everything, train_loop
from pipeline.train.projector import projector_window
from pipeline.train.sr_data import FACTOR, sample_crops

CROP, MARGIN = 24, 4


def train(args: argparse.Namespace):
    dev = device()
    seed_everything(args.seed)
    vae = AutoencoderTiny.from_pretrained(Path(args.out) / "vae").to(dev).eval().requires_grad_(False)
    projector = LatentProjector.from_pretrained(Path(args.out) / "projector").to(dev).eval().requires_grad_(False)
    unet = arch.upscaler_unet().to(dev).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr)
    ckpt = Checkpoint(args.run_dir, "upscaler")
    step, elapsed = ckpt.load(model=unet, opt=opt) if args.resume else (0, 0.0)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 9])
    m = MARGIN

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        # uniform placement, scored on window cores: a border-aware fine-tune did not help (README, mini)
        crops = sample_crops(rng, vae, args.batch_size, CROP, MARGIN, with_hr=True, border=0.0)
        lr = torch.stack([c.lr_latent for c in crops]).to(dev)
        with torch.no_grad():
            cond = projector_window(projector, lr, crops)[..., m:-m, m:-m]
            target = vae.encode(torch.stack([c.hr_pixels for c in crops]).to(dev)).latents[..., m:-m, m:-m]
        noise = torch.randn_like(target)
        pred = unet(noise, 999, cond)
        loss = ((pred - target) ** 2).mean() + (pred - target).abs().mean()
        if args.pixel_loss:  # what PSNR measures: the latent mean of uncertain detail can decode badly
            e = FACTOR * m
            hr = torch.stack([c.hr_pixels for c in crops]).to(dev)[..., e:-e, e:-e]
            loss = loss + args.pixel_loss * (vae.decode(pred).sample - hr).abs().mean()
        return loss, {"loss": (loss, ".4f"), "base": (((cond - target) ** 2).mean(), ".4f")}

    step = train_loop("upscaler", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
                      state=dict(model=unet, opt=opt), batch_loss=batch_loss, clip=list(unet.parameters()))
    if args.out:
        unet.eval().save_pretrained(Path(args.out) / "upscaler")
    print(f"upscaler: {step} steps, {budget.elapsed() / 60:.1f} min")
    return unet
