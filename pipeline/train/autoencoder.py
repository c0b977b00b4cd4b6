"""Train the x8 autoencoder (AutoencoderTiny layout, no normalisation layers).

Loss: L1 + MSE on pixels, plus a small penalty keeping each latent channel near zero mean and unit
std (the set uses scaling_factor 1.0, and IP2P feeds image latents to the U-Net unscaled), and the
decoder sees slightly noised latents half the time so it tolerates a diffusion model's errors.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline import mini_architecture as arch
from pipeline.train.common import Budget, Checkpoint, Postfix, device, psnr, seed_everything, train_loop
from pipeline.train.data import autoencoder_batch
from pipeline.train.photos import autoencoder_images


def latent_stats_penalty(z: torch.Tensor) -> torch.Tensor:
    mean = z.mean(dim=(0, 2, 3))
    std = z.std(dim=(0, 2, 3))
    return (mean ** 2).mean() + ((std - 1) ** 2).mean()


def train(args: argparse.Namespace, vae=None):
    dev = device()
    seed_everything(args.seed)
    decoder_only = getattr(args, "decoder_only", False)
    if decoder_only:  # YONOS-style: keep the latent space (encoder) fixed, fine-tune the decoder
        from diffusers import AutoencoderTiny

        vae = AutoencoderTiny.from_pretrained(Path(args.out) / "vae")
        vae.encoder.requires_grad_(False)
    vae = vae or arch.vae()
    vae.to(dev).train()
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    ckpt = Checkpoint(args.run_dir, "decoder" if decoder_only else "autoencoder")
    step, elapsed = ckpt.load(model=vae, opt=opt) if args.resume else (0, 0.0)
    budget = Budget(args.steps, args.minutes, elapsed_before=elapsed)
    rng = np.random.default_rng([args.seed, step])
    share = getattr(args, "ae_photo_share", 0.0)

    def batch_loss() -> tuple[torch.Tensor, Postfix]:
        x = autoencoder_batch(rng, args.batch_size,
                              photos=autoencoder_images(rng, round(share * args.batch_size)) if share else None).to(dev)
        with torch.set_grad_enabled(not decoder_only):
            z = vae.encode(x).latents
        zn = z + 0.05 * torch.randn_like(z) * (torch.rand(z.shape[0], 1, 1, 1, device=dev) < 0.5)
        y = vae.decode(zn).sample
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + 0.02 * latent_stats_penalty(z)
        return loss, {"loss": (loss, ".4f"), "psnr": (psnr(y.detach(), x).mean(), ".1f"),
                      "zstd": (z.detach().std(), ".2f")}

    step = train_loop("autoencoder", opt=opt, budget=budget, step=step, args=args, ckpt=ckpt,
                      state=dict(model=vae, opt=opt), batch_loss=batch_loss, clip=trainable)
    vae.eval()
    if args.out:
        vae.save_pretrained(Path(args.out) / "vae")
    print(f"autoencoder{' (decoder only)' if decoder_only else ''}: {step} steps, {budget.elapsed() / 60:.1f} min")
    return vae
