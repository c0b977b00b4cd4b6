"""At the output size every pixel has one of three origins, decided at the edit size from evidence:

- **source**: outside the edit region the output is the source's own pixel (bit for bit);
- **transfer**: inside it, where the edit is a colour map of the source, the map applied to the
  full-resolution source: the region model's own prediction of the region's map where the set
  has one and says the edit is one, else local maps fitted between the source and its edit where
  the fit's residual is small (`pipeline.stages.transfer`);
- **generative**: where the edit drew new structure (the residual is large), the learned
  projection, one-step SR over the tiles that region touches, and a tiled decode of those tiles.
  Where the region model says the edit is a removal, its surround continued inward at the output
  size takes this place (`pipeline.stages.fill`; the report counts it as transfer).

The region's border is upsampled with the source as guide (a guided filter on the mask), so it
snaps to the source's own edges instead of the edit grid: no halos, no blocky seams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.stages.transfer import Box, box, resize_crop

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

    def bounds(self, size: tuple[int, int], margin: int = 3) -> Box:
        """The output-pixel box (x0, y0, x1, y1) holding every pixel the region can reach at `size`
        (W, H): its edit-size bounding box grown by `margin` edit pixels (the guided filter's reach)."""
        ys, xs = np.nonzero(self.region)
        h, w = self.region.shape
        x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + 1 + margin)
        y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + 1 + margin)
        sx, sy = size[0] / w, size[1] / h
        return (int(x0 * sx), int(y0 * sy), min(size[0], int(np.ceil(x1 * sx))), min(size[1], int(np.ceil(y1 * sy))))

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


def guided_upsample(mask: np.ndarray, guide_small: np.ndarray, guide: np.ndarray, radius: int = 1, eps: float = 4e-3,
                    size: tuple[int, int] | None = None, window: Box | None = None) -> np.ndarray:
    """Upsample `mask` (h, w) to the size of `guide` (H, W) following the guide's edges (the guided
    filter's local linear model mask ~ a * guide + b, fitted at (h, w), applied at (H, W)); or, with
    `size` and `window`, for the window of a frame of `size` that `guide` holds. Windows with no mask
    give a = b = 0 exactly, so the result is exactly 0 away from the region."""
    m = torch.from_numpy(mask)[None, None].double()
    g = torch.from_numpy(guide_small)[None, None].double()
    mean_g, mean_m = box(g, radius), box(m, radius)
    var = box(g * g, radius) - mean_g ** 2
    cov = box(g * m, radius) - mean_g * mean_m
    a = cov / (var + eps)
    b = mean_m - a * mean_g
    a, b = box(a, radius)[0, 0].float().numpy(), box(b, radius)[0, 0].float().numpy()
    size = size or (guide.shape[1], guide.shape[0])
    out = resize_crop(a, size, window) * guide + resize_crop(b, size, window)
    out = np.clip(out, 0.0, 1.0, out=out)
    out[out < 1 / 512] = 0.0
    return out


def colour_support(core: np.ndarray, small: np.ndarray, crop: np.ndarray, ridge: float = 0.06,
                   inner: float = 3.0, outer: float = 5.0, sample: int = 500, fraction: float = 0.5) -> np.ndarray:
    """How far each pixel of `crop` (H, W, 3) in [0, 1] belongs, by its colour, to the region whose
    confident core `core` (h, w) bool is given at the edit size over `small` (h, w, 3): 1 within `inner`
    Mahalanobis units of the core's colours, 0 beyond `outer`, linear between. The colours' location
    and covariance (plus `ridge`^2) are the minimum covariance determinant estimate (Rousseeuw 1984):
    the most compact half of the core, so a core that spilled onto a neighbouring shape or between
    stripes still describes the thing named. The 64-px region model cannot resolve a thin white
    stripe inside a background; a map fitted to the background must not reach it."""
    from sklearn.covariance import MinCovDet

    px = small[core].astype(np.float64)
    if len(px) < 8:
        return np.ones(crop.shape[:2], np.float32)
    if len(px) > sample:  # a fixed subsample: the estimate is deterministic and cheap
        px = px[np.random.default_rng(0).choice(len(px), sample, replace=False)]
    # dequantised (uniform within one 8-bit level): a flat shape's colours are otherwise one point
    mcd = MinCovDet(support_fraction=fraction, random_state=0).fit(px + np.random.default_rng(1).uniform(-0.5, 0.5, px.shape) / 255)
    inv = np.linalg.inv(mcd.covariance_ + ridge ** 2 * np.eye(3)).astype(np.float32)
    d = crop - mcd.location_.astype(np.float32)
    dist = np.sqrt(np.einsum("hwc,cd,hwd->hw", d, inv, d))
    return np.clip((outer - dist) / (outer - inner), 0.0, 1.0)


def upsample(mask: np.ndarray, size: tuple[int, int], window: Box | None = None) -> np.ndarray:
    """Plain bilinear upsampling to (W, H) (or the window of it), exact zeros kept."""
    out = resize_crop(mask.astype(np.float32), size, window)
    out[out < 1 / 512] = 0.0
    return out


def luma(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (H, W) luminance."""
    return (image @ LUMA.numpy()).astype(np.float32)


def compose(source: np.ndarray, region: np.ndarray, inside: np.ndarray, window: Box | None = None) -> np.ndarray:
    """`source` (H, W, 3) uint8; `region` (h, w) in [0, 1] and `inside` (h, w, 3) float in [0, 1], the
    edited pixels, over the whole frame or over `window`. Pixels where the region is 0 are the
    source's bytes unchanged."""
    out = source.copy()
    x0, y0, x1, y1 = window or (0, 0, source.shape[1], source.shape[0])
    crop = source[y0:y1, x0:x1]
    m = region[..., None]
    src = crop.astype(np.float32) / 255.0
    edited = np.clip((src + m * (inside - src)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(m > 0, edited, crop)
    return out
