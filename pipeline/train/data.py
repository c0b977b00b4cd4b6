"""Training batches drawn from SynthEdit (training seeds only; validation/test seeds are never used here)."""
from __future__ import annotations

import numpy as np
import torch

from pipeline import synthedit as se
from pipeline.train.common import to_tensor

EDIT_SIZES = ((128, 128), (128, 64), (128, 96))   # what the edit stage sees for 1:1, 16:9 and 4:3 inputs


def edit_size(aspect: float, long_side: int = 128, multiple: int = 32) -> tuple[int, int]:
    from pipeline.stages.edit import standard_size

    return standard_size(round(1000 * aspect), 1000, long_side, multiple)


def train_seed(rng: np.random.Generator) -> int:
    lo, hi = se.SPLITS["train"]
    return int(rng.integers(lo, hi))


def random_window(rng: np.random.Generator, full_w: int, full_h: int, crop: int) -> se.Window:
    """A crop x crop pixel window of a full_w x full_h frame, as scene fractions (pixel-aligned)."""
    x = int(rng.integers(0, max(1, full_w - crop + 1)))
    y = int(rng.integers(0, max(1, full_h - crop + 1)))
    return (x / full_w, y / full_h, (x + crop) / full_w, (y + crop) / full_h)


def autoencoder_batch(rng: np.random.Generator, n: int, crop: int = 128, photos: list | None = None) -> torch.Tensor:
    """Half whole frames at the edit size (sources, targets with looks/artifacts), half crops of renders
    at 1.5x-30x that size (the high-resolution detail the upscaler's targets are encoded from); `photos`
    (crop x crop images, e.g. `pipeline.train.photos.autoencoder_images`) take their share of the batch."""
    images = list(photos or [])
    for i in range(n - len(images)):
        ex = se.sample(train_seed(rng))
        pick = ex.source if rng.random() < 0.5 else ex.target
        if i % 2 == 0:
            w, h = edit_size(ex.source_scene.aspect)
            im = pick(w, h)
            im = im.crop((0, 0, crop, crop)) if (w, h) == (crop, crop) else _pad_to(im, crop, rng)
        else:
            scale = float(np.exp(rng.uniform(np.log(1.5), np.log(30))))
            w, h = ex.size(round(128 * scale))
            im = pick(crop, crop, random_window(rng, w, h, crop)) if min(w, h) >= crop else _pad_to(pick(w, h), crop, rng)
        images.append(im)
    return to_tensor(images)


def _pad_to(im, crop: int, rng: np.random.Generator):
    """Embed a smaller image in a crop x crop canvas (reflect) so batches share one size."""
    arr = np.asarray(im)
    h, w = arr.shape[:2]
    arr = arr[:crop, :crop]
    ph, pw = crop - arr.shape[0], crop - arr.shape[1]
    arr = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else arr
    from PIL import Image

    return Image.fromarray(arr)


def flat_added_shape(ex: se.EditExample, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The colour map's target: for an added shape, its own flat colour over the whole mask. At 64 px a
    thin shape is an anti-aliased blend with what is under it; a map fitted to that blend draws a
    faint tint at the output size, where the shape is drawn at full coverage."""
    if ex.family != "add":
        return target
    out = target.copy()
    out[mask] = se.COLOURS[ex.target_scene.shapes[ex.changed[0]].colour]
    return out
