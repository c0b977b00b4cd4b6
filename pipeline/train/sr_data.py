"""Crops for the projector and the one-step SR U-Net: the same SynthEdit scene at the edit size and at
x2-x30 of it, cut into small latent windows so training never renders or encodes a whole 4K frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline import synthedit as se
from pipeline.models.latent_projector import bicubic_window
from pipeline.train.common import to_tensor
from pipeline.train.data import train_seed

LR = 128  # edit-size render (px); latent 16x16
FACTOR = 8  # pixels per latent pixel of the mini autoencoder
BORDER_SHARE = 0.25


@dataclass
class SRCrop:
    lr_latent: torch.Tensor     # (4, 16, 16) encode(LR render)
    scale: float
    full: tuple[int, int]       # HR latent size of the whole frame
    top: int                    # window (latent px, margin included)
    left: int
    size: int                   # window side incl. margins (latent px)
    hr_pixels: torch.Tensor | None  # (3, 8*size, 8*size) HR render of the window


def sample_crops(rng: np.random.Generator, vae, n: int, crop: int, margin: int, scales=(2.0, 30.0),
                 with_hr: bool = True, border: float = BORDER_SHARE) -> list[SRCrop]:
    """`border`: per axis, the chance that the window sits against the frame's edge (either side).
    Uniform placement would put it there once in `full - window + 1` draws, and the frame's outer
    cells behave differently (they see the encoder's and decoder's zero padding)."""
    f = FACTOR
    out = []
    win = crop + 2 * margin
    with torch.no_grad():
        exs = [se.sample(train_seed(rng)) for _ in range(n)]
        pick = [e.target if rng.random() < 0.6 else e.source for e in exs]
        lr = vae.encode(to_tensor([p(LR, LR) for p in pick])).latents
    for i, p in enumerate(pick):
        s = float(np.exp(rng.uniform(np.log(scales[0]), np.log(scales[1]))))
        full = max(win, round(LR * s / f))
        top, left = _place(rng, full, win, border), _place(rng, full, win, border)
        hr = None
        if with_hr:
            window = (left / full, top / full, (left + win) / full, (top + win) / full)
            hr = to_tensor([p(win * f, win * f, window)])[0]
        out.append(SRCrop(lr[i], full / (LR / f), (full, full), top, left, win, hr))
    return out


def _place(rng: np.random.Generator, full: int, win: int, border: float) -> int:
    """Start of a `win`-long window on a `full`-long axis: against an edge with chance `border`."""
    if rng.random() < border:
        return int(rng.choice([0, full - win]))
    return int(rng.integers(0, full - win + 1))


@torch.no_grad()
def reference_condition_window(vae, lr_latents: torch.Tensor, crops: list[SRCrop]) -> tuple[torch.Tensor, torch.Tensor]:
    """bicubic(decode(z)) on each window and its encoding: the projector's targets in pixels and latents."""
    f = FACTOR
    pixels = vae.decode(lr_latents).sample.clamp(-1, 1)
    wins = torch.cat([bicubic_window(pixels[i:i + 1], (c.full[0] * f, c.full[1] * f), (c.top * f, c.left * f, c.size * f, c.size * f))
                      for i, c in enumerate(crops)]).clamp(-1, 1)
    return wins, vae.encode(wins).latents


def loss_mask(crops: list[SRCrop], margin: int, factor: int = 1) -> torch.Tensor:
    """(B, 1, size*factor, size*factor) weights for a window loss: 1 on each window's core, and on its
    margin only where the window touches the frame's border. The margin exists because the target's
    encoder and the decoder see zero padding at a window's edge where the frame has content; at the
    frame's own border the whole frame sees that same padding, so those cells are exact. Cropping
    them too left the outer `margin` cells of every frame untrained: measured on the earlier weights,
    that border band held most of the decoded projection's gap to bicubic of the decoded latent (x4:
    -0.36 dB on the whole frame, -0.03 dB without a 32-px border)."""
    out = []
    for c in crops:
        lo_y, hi_y = (0 if c.top == 0 else margin), (c.size if c.top + c.size == c.full[0] else c.size - margin)
        lo_x, hi_x = (0 if c.left == 0 else margin), (c.size if c.left + c.size == c.full[1] else c.size - margin)
        w = torch.zeros(1, c.size, c.size)
        w[:, lo_y:hi_y, lo_x:hi_x] = 1
        out.append(w)
    return torch.stack(out).repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` (B, C, H, W) over the cells where `mask` (B, 1, H, W) is 1."""
    return (x * mask).sum() / (mask.sum() * x.shape[1])
