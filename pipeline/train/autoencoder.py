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
from pipeline.train.common import Budget, Checkpoint, cosine_lr, device, progress_bar, psnr, seed_everything
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
    bar = progress_bar(args.steps, step, "autoencoder")
    while not budget.done(step):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(args.lr, budget.progress(step))
        share = getattr(args, "ae_photo_share", 0.0)
        x = autoencoder_batch(rng, args.batch_size,
                              photos=autoencoder_images(rng, round(share * args.batch_size)) if share else None).to(dev)
        with torch.set_grad_enabled(not decoder_only):
            z = vae.encode(x).latents
        zn = z + 0.05 * torch.randn_like(z) * (torch.rand(z.shape[0], 1, 1, 1, device=dev) < 0.5)
        y = vae.decode(zn).sample
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + 0.02 * latent_stats_penalty(z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr(y.detach(), x).mean().item():.1f}",
                            zstd=f"{z.std().item():.2f}")
        if step % args.checkpoint_every == 0:
            ckpt.save(step, budget.elapsed(), model=vae, opt=opt)
    bar.close()
    ckpt.save(step, budget.elapsed(), model=vae, opt=opt)
    vae.eval()
    if args.out:
        vae.save_pretrained(Path(args.out) / "vae")
    print(f"autoencoder{' (decoder only)' if decoder_only else ''}: {step} steps, {budget.elapsed() / 60:.1f} min")
    return vae
