"""Train the latent projector: regress `projector(z, size)` onto `encode(bicubic(decode(z)))` at the
upscaler's resolution (stage 2 replaces the pixel round trip). Scales x2-x30, 32-px latent crops,
scored on their core and on the frame's border (`sr_data.loss_mask`). With `--pixel-loss`, plus an
L1 between the decoded projection and `bicubic(decode(z))`. The projector starts as the plain
bicubic latent resize (identity mix, zero residual) with its trunk copied from the decoder."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderTiny

from pipeline import mini_architecture as arch
from pipeline.train.common import Budget, Checkpoint, Postfix, device, seed_everything, train_loop
from pipeline.train.sr_data import FACTOR, loss_mask, masked_mean, reference_condition_window, sample_crops

CROP, MARGIN = 24, 4


def projector_window(projector, lr_latents: torch.Tensor, crops) -> torch.Tensor:
    """The projector's output on each window (margin included; the caller crops it off): exactly the
    window of `projector(z, full_size)`, without computing the rest of the frame."""
    return torch.cat([projector(lr_latents[i:i + 1], c.full, (c.top, c.left, c.size, c.size))
                      for i, c in enumerate(crops)])


def train(args: argparse.Namespace):
    dev = device()
    seed_everything(args.seed)
    vae = AutoencoderTiny.from_pretrained(Path(args.out) / "vae").to(dev).eval().requires_grad_(False)
    proj = arch.projector().to(dev).train()
    proj.init_trunk_from(vae.decoder)
    with torch.no_grad():
        proj.mix.weight.copy_(torch.eye(proj.mix.out_channels, proj.mix.in_channels)[:, :, None, None])
        proj.mix.bias.zero_()
    opt = torch.optim.AdamW(proj.parameters(), lr=args.lr)
    ckpt = Checkpoint(args.run_dir, "projector")
    step, elapsed = ckpt.load(model=proj, opt=opt) if args.resume else (0, 0.0)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step, 5])

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        crops = sample_crops(rng, vae, args.batch_size, CROP, MARGIN, with_hr=False)
        lr = torch.stack([c.lr_latent for c in crops]).to(dev)
        pixels, target = reference_condition_window(vae, lr, crops)
        pred = projector_window(proj, lr, crops)
        d = pred - target
        loss = args.latent_loss * masked_mean(d ** 2 + d.abs(), loss_mask(crops, MARGIN).to(dev))
        if args.pixel_loss:  # the reference latent is non-local (wide encoder receptive field); many
            # latents decode alike, so also ask that the projection *decodes* like the reference
            err = (vae.decode(pred).sample - pixels).abs()
            loss = loss + args.pixel_loss * masked_mean(err, loss_mask(crops, MARGIN, FACTOR).to(dev))
        return loss, {"loss": (loss, ".4f")}

    step = train_loop("projector", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
                      state=dict(model=proj, opt=opt), batch_loss=batch_loss)
    if args.out:
        proj.eval().save_pretrained(Path(args.out) / "projector")
    print(f"projector: {step} steps, {budget.elapsed() / 60:.1f} min")
    return proj
