"""Source-guided transfer of a low-resolution colour/tone edit onto the full-resolution source.

A recolour, a background colour or a look (black and white, night, warmer) is, locally, an affine
map of the source's colours. Following the fast guided filter (He & Sun 2015) and bilateral
guided upsampling (Chen et al. 2016), 3x4 affine colour maps are fitted between the source and
its edit *at the edit size* (ridge-regularised least squares in every (2r+1)^2 window, then
averaged over the windows covering a pixel), upsampled bilinearly, and applied to the source at
the output size. The result keeps every edge and texture of the 4K source; the fit residual says
where the edit is *not* a colour map of what is there (new structure), which is where the
generative path has to take over.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in output pixels, half-open


def _interpolation_matrix(n_full: int, n_in: int, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of the (n_full, n_in) linear-interpolation matrix with half-pixel centres and
    clamped (replicated) borders: the weights `cv2.resize(..., INTER_LINEAR)` uses along one axis."""
    src = np.clip((np.arange(start, stop) + 0.5) * n_in / n_full - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    frac = (src - i0).astype(np.float32)
    m = np.zeros((stop - start, n_in), np.float32)
    rows = np.arange(stop - start)
    m[rows, i0] += 1 - frac
    m[rows, np.minimum(i0 + 1, n_in - 1)] += frac
    return m


def resize_crop(plane: np.ndarray, size: tuple[int, int], box: Box | None = None) -> np.ndarray:
    """The window `box` of `plane` (h, w) bilinearly resized to `size` (W, H), with half-pixel centres
    and replicated borders (what `cv2.resize` does for the whole frame), computed for the window only
    (two small matrix products), so a 4K frame is never made for a small region."""
    w_full, h_full = size
    x0, y0, x1, y1 = box or (0, 0, w_full, h_full)
    h, w = plane.shape
    if (x0, y0, x1, y1) == (0, 0, w_full, h_full):
        return plane if (w, h) == size else cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR)
    rows = _interpolation_matrix(h_full, h, y0, y1)
    cols = _interpolation_matrix(w_full, w, x0, x1)
    return (rows @ plane.astype(np.float32)) @ cols.T


def box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows, windows clipped at the border (a normalised box filter)."""
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False) if r > 0 else x


@dataclass
class AffineColourMap:
    """Per-pixel affine colour maps at the fit size: out = A @ rgb + b (A: 3x3, b: 3)."""

    a: torch.Tensor  # (1, 3, 3, h, w): a[:, out_channel, in_channel]
    b: torch.Tensor  # (1, 3, h, w)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.b.shape[-2:])

    def apply(self, image: np.ndarray, size: tuple[int, int] | None = None, box: Box | None = None) -> np.ndarray:
        """Apply to `image` (H, W, 3) float32 in [0, 1]: the whole frame at that size, or the window `box`
        of a frame of `size` (W, H) when `image` is that window. Each coefficient plane is upsampled
        bilinearly and used at once, so peak memory stays a few planes."""
        h, w = image.shape[:2]
        size = size or (w, h)
        channels = [np.ascontiguousarray(image[..., i]) for i in range(3)]

        def up(plane: torch.Tensor) -> np.ndarray:
            return resize_crop(plane.contiguous().numpy(), size, box)

        out = np.empty_like(image)
        tmp = np.empty((h, w), np.float32)
        for o in range(3):
            acc = up(self.b[0, o]).copy()
            for i in range(3):
                np.multiply(up(self.a[0, o, i]), channels[i], out=tmp)
                acc += tmp
            out[..., o] = acc
        return out


def _moments(i: torch.Tensor, p: torch.Tensor, mean) -> tuple[torch.Tensor, ...]:
    """Means and (co)variances under the averaging `mean`: (1, 3, h, w) means, (1, 3, 3, h, w) covariances."""
    mean_i, mean_p = mean(i), mean(p)
    ii = torch.stack([mean(i[:, c : c + 1] * i) for c in range(3)], 1) - mean_i[:, :, None] * mean_i[:, None]
    ip = torch.stack([mean(i[:, c : c + 1] * p) for c in range(3)], 1) - mean_i[:, :, None] * mean_p[:, None]
    return mean_i, mean_p, ii, ip


def fit_affine_colour(source: torch.Tensor, edited: torch.Tensor, radius: int = 2, eps: float = 1e-3) -> AffineColourMap:
    """Fit local affine maps source -> edited; both (1, 3, h, w) in [0, 1] at the same (edit) size.

    Per window: A = argmin |p - A i - b|^2 + eps |A - A_global|^2, b = mean(p) - A mean(i) (the guided
    filter with a colour guide, its ridge pulled towards the image's global colour map instead of 0,
    so flat windows, where the local fit is undetermined, carry the source's detail through the global
    map instead of flattening it); then A and b are averaged over every window containing the pixel.
    """
    i, p = source.double(), edited.double()
    eye = torch.eye(3, dtype=i.dtype)
    _, _, gii, gip = _moments(i, p, lambda x: x.mean(dim=(-2, -1), keepdim=True))
    a_global = torch.linalg.solve(gii[0, :, :, 0, 0] + 1e-6 * eye, gip[0, :, :, 0, 0])     # (3in, 3out)
    mean_i, mean_p, ii, ip = _moments(i, p, lambda x: box(x, radius))
    sigma = (ii + eps * eye[None, :, :, None, None]).permute(0, 3, 4, 1, 2)               # (1, h, w, 3in, 3in)
    cov = (ip + eps * a_global[None, :, :, None, None]).permute(0, 3, 4, 1, 2)            # (1, h, w, 3in, 3out)
    a = torch.linalg.solve(sigma, cov).permute(0, 4, 3, 1, 2)                             # (1, 3out, 3in, h, w)
    b = mean_p - (a * mean_i[:, None]).sum(2)
    a_mean = box(a.flatten(1, 2), radius).view_as(a)
    b_mean = box(b, radius)
    return AffineColourMap(a=a_mean.float(), b=b_mean.float())


def fit_residual(source: torch.Tensor, edited: torch.Tensor, colour_map: AffineColourMap) -> torch.Tensor:
    """Per-pixel residual max_c |edited - map(source)| at the fit size, (1, 1, h, w) in [0, 1] units:
    near zero where the edit is a local colour map of the source, large where it drew something new."""
    mapped = colour_map.apply(source[0].permute(1, 2, 0).numpy())
    return (edited - torch.from_numpy(mapped).permute(2, 0, 1)[None]).abs().amax(1, keepdim=True)
