"""Quality, hallucination and seam measures, and the paired bootstrap behind the headline ratios.

Images are uint8 RGB arrays (H, W, 3) or PIL images. Every function says what it measures and on
which view, because several of them cannot afford a full 4K frame on a CPU.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

PSNR_CAP = 50.0          # dB: an exact match reads 50, not infinity, so means over images stay finite
BRISQUE_CROP = 512       # BRISQUE on a centre crop at the output's native resolution
DETECTOR_SIDE = 512      # the artifact detector on the whole frame downscaled to this long side


def as_array(image) -> np.ndarray:
    return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)


def pixels_sha256(image: Image.Image) -> str:
    """Identity of an output's pixels (size and RGB values, not the file encoding): two methods with
    the same digest on the same input produced byte-identical images. Same definition as `study prepare`."""
    import hashlib
    import struct

    rgb = image.convert("RGB")
    return hashlib.sha256(struct.pack(">II", *rgb.size) + rgb.tobytes()).hexdigest()


def psnr(a, b, mask: np.ndarray | None = None) -> float:
    """PSNR in dB (peak 255, capped at `PSNR_CAP`); with a boolean (H, W) `mask`, over the masked pixels
    only (NaN if none). The one PSNR of the project: benchmark, evaluation tables and tests."""
    d = as_array(a).astype(np.float64) - as_array(b).astype(np.float64)
    if mask is not None:
        if not mask.any():
            return math.nan
        d = d[mask]
    mse = float(np.mean(d * d))
    return float(min(PSNR_CAP, 10 * np.log10(255.0**2 / max(mse, 1e-10))))


def ssim(a, b) -> float:
    """SSIM (scikit-image defaults: uniform 7x7 window, per channel, data range 255) over the full frame."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(as_array(a), as_array(b), channel_axis=2, data_range=255))


def region_mae(a, b, mask: np.ndarray) -> float:
    """Mean absolute error (0-255 scale, all channels) inside `mask`: the edit-region error. NaN if empty."""
    if not mask.any():
        return math.nan
    d = np.abs(as_array(a).astype(np.float64) - as_array(b).astype(np.float64))
    return float(d[mask].mean())


def lr_consistency(output: Image.Image, low_res: Image.Image) -> float:
    """PSNR between the output box-downscaled (area average) to the standard-resolution edit's size
    and that standard-resolution edit: low means the upscaling changed or invented content."""
    small = output.convert("RGB").resize(low_res.size, Image.Resampling.BOX)
    return psnr(small, low_res)


def centre_crop(image: Image.Image, side: int = BRISQUE_CROP) -> Image.Image:
    w, h = image.size
    cw, ch = min(side, w), min(side, h)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def _brisque_model():
    from brisque import BRISQUE

    class _Brisque(BRISQUE):
        """numpy-2 shim: the package hands 1-element arrays to code that expects scalars."""

        def scale_features(self, f):
            return super().scale_features([np.asarray(x, float).ravel()[0] for x in f])

    return _Brisque(url=False)


_BRISQUE = None


def brisque(image: Image.Image, crop: int = BRISQUE_CROP) -> float:
    """BRISQUE (lower = more natural-looking) on a `crop` x `crop` centre crop at native resolution.

    NaN when the `brisque` package cannot load (it needs OpenCV: `opencv-python-headless`)."""
    global _BRISQUE
    if _BRISQUE is None:
        try:
            _BRISQUE = _brisque_model()
        except ImportError:
            _BRISQUE = False
    if _BRISQUE is False:
        return math.nan
    return float(_BRISQUE.score(as_array(centre_crop(image, crop))))


def detector_view(image: Image.Image, side: int = DETECTOR_SIDE) -> Image.Image:
    w, h = image.size
    scale = side / max(w, h)
    if scale >= 1:
        return image.convert("RGB")
    return image.convert("RGB").resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)


def artifact_scores(detector, image: Image.Image, side: int = DETECTOR_SIDE, threshold: float = 0.5) -> dict[str, float]:
    """The artifact detector M on the frame downscaled to long side `side`: share of pixels with
    p > threshold (`artifact_ratio`, the paper's filtering criterion) and mean p (`artifact_prob`)."""
    import torch

    x = torch.from_numpy(as_array(detector_view(image, side)).astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        p = detector.probabilities(x)
    return {"artifact_ratio": float((p > threshold).float().mean()), "artifact_prob": float(p.mean())}


# ------------------------------------------------------------------------------------------ seams


def seam_lines(plan, scale: int, length: int, axis: str) -> list[int]:
    """Output-pixel positions b (boundary between pixel b-1 and b) where a tile plan's outputs meet.

    ACPT and naive tiling: core starts; overlap blending: every window start and stop. `axis` is
    "rows" or "cols"; positions outside (0, length) are dropped.
    """
    spans = {getattr(t, axis) for t in plan.tiles}
    if plan.mode == "overlap":
        cuts = {s.window_start for s in spans} | {s.window_stop for s in spans}
    else:
        cuts = {s.core_start for s in spans}
    return sorted({c * scale for c in cuts if 0 < c * scale < length})


@dataclass(frozen=True)
class SeamScore:
    ratio: float          # boundary / elsewhere; 1.0 = invisible
    boundary: float       # mean |step| across boundary pixel pairs (0-255), weighted over the axes
    elsewhere: float      # mean |step| across all other adjacent pixel pairs along the same axes
    lines: int            # boundary lines measured


def seam_visibility(image, rows: Sequence[int], cols: Sequence[int], period: int = 1) -> SeamScore:
    """Mean absolute difference between neighbouring pixels *across* tile boundaries, divided by
    the same at the other positions of the same phase along the same axis (all channels).

    `cols` are boundary positions b: the pair (column b-1, column b) straddles the boundary.
    `period`: the reference positions are those congruent to a boundary modulo `period` (use the
    latent factor for outputs decoded from a latent, whose 8-px structure would otherwise bias the
    comparison; 1 = every other column/row). The ratio is taken per axis and averaged, weighted
    by boundary pixel pairs. 1.0 means boundaries are as smooth as comparable positions elsewhere;
    a visible seam gives > 1.
    """
    g = as_array(image).astype(np.float32)
    h, w = g.shape[:2]
    axes = []
    for steps, cuts, length, across in ((np.abs(np.diff(g, axis=1)).mean(axis=(0, 2)), cols, w, h),
                                        (np.abs(np.diff(g, axis=0)).mean(axis=(1, 2)), rows, h, w)):
        cuts = [c for c in cuts if 0 < c < length]
        at = np.zeros(length - 1, bool)
        at[[c - 1 for c in cuts]] = True
        position = np.arange(1, length)
        ref = np.isin(position % period, [c % period for c in cuts]) & ~at
        if at.any() and ref.any():
            axes.append((at.sum() * across, steps[at].mean(), steps[ref].mean()))
    if not axes:
        return SeamScore(math.nan, math.nan, math.nan, 0)
    weight = sum(n for n, _, _ in axes)

    def ratio(b: float, o: float) -> float:
        return 1.0 if b == o else (b / o if o > 0 else math.inf)

    r = sum(n * ratio(b, o) for n, b, o in axes) / weight
    boundary = sum(n * b for n, b, _ in axes) / weight
    elsewhere = sum(n * o for n, _, o in axes) / weight
    lines = sum(1 for c in cols if 0 < c < w) + sum(1 for c in rows if 0 < c < h)
    return SeamScore(float(r), float(boundary), float(elsewhere), lines)


# -------------------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class RelativeDifference:
    """MobilePicasso against one baseline on the same test images: a relative difference of means
    with a paired percentile-bootstrap confidence interval (test images resampled with replacement)."""

    estimate: float   # percent
    low: float
    high: float
    n_images: int
    n_boot: int
    confidence: float

    def text(self, digits: int = 0) -> str:
        if not math.isfinite(self.estimate):
            return "n/a"
        f = f"{{:+.{digits}f}}"
        return f"{f.format(self.estimate)}% [{f.format(self.low)}, {f.format(self.high)}]"


def relative_difference(ours: Sequence[float], base: Sequence[float], *, n_boot: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> RelativeDifference:
    """Relative difference of means in percent, paired by test image: 100 * (mean(ours) / mean(base) - 1).

    For a higher-is-better score (PSNR) a positive value is the paper's "quality +x%"; for a
    lower-is-better one (artifact ratio) a negative value is its "hallucination -y%". The interval
    is the percentile bootstrap: test images resampled with replacement `n_boot` times, the same
    images for both methods. Pairs where either value is not finite are dropped; NaN when the
    baseline's mean is 0.
    """
    a, b = np.asarray(ours, float), np.asarray(base, float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    if n == 0 or b.mean() == 0:
        return RelativeDifference(math.nan, math.nan, math.nan, n, 0, confidence)

    def stat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100 * (x.mean(axis=-1) / y.mean(axis=-1) - 1)

    est = float(stat(a, b))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = stat(a[idx], b[idx])
    boots = boots[np.isfinite(boots)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha]) if len(boots) else (math.nan, math.nan)
    return RelativeDifference(est, float(low), float(high), n, n_boot, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """mean(ours - base) over the test images both ran, with a 95% Student-t interval (NaN below 2 pairs)."""

    mean: float
    low: float
    high: float
    n_images: int


def paired_difference(ours: Sequence[float], base: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """The paired difference in the metric's own unit (dB for PSNR): positive = ours higher."""
    from scipy import stats

    a, b = np.asarray(ours, float), np.asarray(base, float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = len(d)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return PairedDifference(mean, mean - half, mean + half, n)
