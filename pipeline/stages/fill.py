"""A removal: the region filled with its surround, continued inward at the output size.

What was under a removed thing is, for the edits the bundled set knows, more of what surrounds it.
The 128-px editor draws that surround again at 1/30 of the output's resolution and often keeps a
trace of the thing; continuing the surround's own full-resolution pixels inward does neither, and
runs neither the editor nor the upscaler. Two choices carry it:
- **only the surround's dominant colours count** (minimum covariance determinant of a ring around
  the region, as `colour_support`): another shape touching the region is not what lies under it;
- **push-pull interpolation** (Gortler et al. 1996, "The Lumigraph"): known pixels are averaged
  down an image pyramid and pulled back up into the hole, so a hole of any size fills smoothly in
  time linear in its window.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.stages.compose import colour_support

RING_SCALE = 1.0  # the ring around the region, in output pixels per edit-size pixel


def removal_alpha(region: np.ndarray, edge: int = 2) -> np.ndarray:
    """The region (H, W) in [0, 1] of a thing to remove, as the compositing weight of its fill: where it
    is a quarter or more, all of it, and `edge` px more. A removed thing must not leave its anti-aliased
    rim behind, which a soft region blends back in as a faint outline."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge + 1, 2 * edge + 1))
    return cv2.dilate(np.clip(4 * region, 0.0, 1.0).astype(np.float32), kernel)


def push_pull(colours: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fill (H, W, 3) `colours` where `weights` (H, W) in [0, 1] is low, from where it is high."""
    levels = [(colours * weights[..., None], weights)]
    while min(levels[-1][1].shape) > 1 and levels[-1][1].min() < 0.5:
        a, w = levels[-1]
        levels.append((cv2.pyrDown(a), cv2.pyrDown(w)))
    a, w = levels[-1]
    estimate = a / np.maximum(w, 1e-8)[..., None]
    for a, w in reversed(levels[:-1]):
        up = cv2.pyrUp(estimate, dstsize=(w.shape[1], w.shape[0]))
        if up.ndim == 2:  # cv2 drops a trailing channel axis of size 1
            up = up[..., None]
        alpha = np.clip(w, 0.0, 1.0)[..., None]
        estimate = alpha * (a / np.maximum(w, 1e-8)[..., None]) + (1 - alpha) * up
    return estimate.astype(np.float32)


def fill_from_surround(crop: np.ndarray, region: np.ndarray, ring: int, fraction: float = 0.5) -> np.ndarray:
    """`crop` (H, W, 3) in [0, 1] with the region (H, W) in [0, 1] filled from a `ring` px wide surround.
    Pixels outside the region are returned as they were."""
    hole = region > 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1, 2 * ring + 1))
    around = cv2.dilate(hole.astype(np.uint8), kernel).astype(bool) & ~hole
    if not around.any():
        return crop
    known = (~hole).astype(np.float32) * colour_support(around, crop, crop, fraction=fraction)
    return np.where(hole[..., None], push_pull(crop, known), crop)
