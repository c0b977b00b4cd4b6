"""At the output size every pixel has one of three origins, decided at the edit size from evidence:

- **source**: outside the edit region the output is the source's own pixel (bit for bit);
- **transfer**: inside it, where the edit is a local colour map of the source (the affine fit's
  residual is small), the map applied to the full-resolution source (`pipeline.stages.transfer`);
- **generative**: where the edit drew new structure (the residual is large), the learned
  projection, one-step SR over the tiles that region touches, and a tiled decode of those tiles.

The region's border is upsampled with the source as guide (a guided filter on the mask), so it
snaps to the source's own edges instead of the edit grid: no halos, no blocky seams.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.stages.transfer import box

LUMA = torch.tensor([0.299, 0.587, 0.114])


@dataclass
class Origins:
    """Soft masks at the edit size, (h, w) float32 in [0, 1]: the edit region and, inside it, the
    part that needs the generative path."""

    region: np.ndarray
    generative: np.ndarray

    @property
    def empty(self) -> bool:
        return not bool((self.region > 0).any())

    def shares(self) -> dict[str, float]:
        """Share of the frame by origin (at the edit size), for the report."""
        r, g = float(self.region.mean()), float((self.region * self.generative).mean())
        return {"source": round(1 - r, 4), "transfer": round(r - g, 4), "generative": round(g, 4)}


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else mask


def decide_origins(
    region: torch.Tensor, residual: torch.Tensor, *, threshold: float = 0.5, residual_threshold: float = 0.08,
    grow: int = 1,
) -> Origins:
    """`region` (1, 1, h, w) soft mask and `residual` (1, 1, h, w) affine-fit residual, both at the edit
    size. The region is binarised and grown by `grow` px (a thin rim of the old colour costs more than
    a transfer that maps the background onto itself); generative where the smoothed residual is large."""
    inside = dilate((region > threshold).float(), grow)
    new = (box(residual, 1) > residual_threshold).float() * inside
    return Origins(region=inside[0, 0].numpy(), generative=dilate(new, grow)[0, 0].numpy() * inside[0, 0].numpy())


def guided_upsample(mask: np.ndarray, guide_small: np.ndarray, guide: np.ndarray, radius: int = 1, eps: float = 4e-3) -> np.ndarray:
    """Upsample `mask` (h, w) to the size of `guide` (H, W) following the guide's edges (the guided
    filter's local linear model mask ~ a * guide + b, fitted at (h, w), applied at (H, W)). Windows
    with no mask give a = b = 0 exactly, so the result is exactly 0 away from the region."""
    m = torch.from_numpy(mask)[None, None].double()
    g = torch.from_numpy(guide_small)[None, None].double()
    mean_g, mean_m = box(g, radius), box(m, radius)
    var = box(g * g, radius) - mean_g ** 2
    cov = box(g * m, radius) - mean_g * mean_m
    a = cov / (var + eps)
    b = mean_m - a * mean_g
    a, b = box(a, radius)[0, 0].float().numpy(), box(b, radius)[0, 0].float().numpy()
    h, w = guide.shape
    out = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR) * guide + cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.clip(out, 0.0, 1.0, out=out)
    out[out < 1 / 512] = 0.0
    return out


def upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Plain bilinear upsampling to (w, h), exact zeros kept."""
    out = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    out[out < 1 / 512] = 0.0
    return out


def luma(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (H, W) luminance."""
    return (image @ LUMA.numpy()).astype(np.float32)


def compose(source: np.ndarray, region: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """`source` (H, W, 3) uint8; `region` (H, W) in [0, 1]; `inside` (H, W, 3) float in [0, 1], the
    edited pixels. Pixels where the region is 0 are the source's bytes unchanged."""
    out = source.copy()
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return out
    r0, r1 = rows[0], rows[-1] + 1
    m = region[r0:r1, :, None]
    src = source[r0:r1].astype(np.float32) / 255.0
    blend = src + m * (inside[r0:r1] - src)
    edited = np.clip(blend * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[r0:r1] = np.where(m > 0, edited, source[r0:r1])
    return out
