"""PhotoEdit: instruction pairs on real photographs with exact ground truth at any resolution.

A look is a fixed per-pixel colour function (plus, for snow, white flakes placed in frame fractions),
so the target at 128 px and at 4K is the same function applied to the photo resized to that size:
`example.target(3840, 2160)` is the look of the 4K photo, not an upscaled small target. Local edits
are SynthEdit's shapes composited onto a photo window (add, remove or recolour a shape), with the
exact edit mask. Every example is a pure function of (photo, seed).

    ex = sample(photo_image, "pool:id", seed=3)
    ex.instruction, ex.family, ex.source(128, 72), ex.target(3840, 2160), ex.edit_mask(128, 72)
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from pipeline import synthedit as se

Window = tuple[float, float, float, float]  # (u0, v0, u1, v1) of the photo, fractions

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def _grey(x: np.ndarray) -> np.ndarray:
    return np.repeat((x @ _LUMA)[..., None], 3, axis=2)


LOOK_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {  # float RGB 0..255 in, unclipped out
    "black and white": _grey,
    "sepia": lambda x: x @ _SEPIA.T * 0.85 + 8,
    "night": lambda x: x * np.array([0.3, 0.36, 0.55], np.float32) + np.array([5, 8, 22], np.float32),
    "warmer": lambda x: x * np.array([1.1, 1.0, 0.78], np.float32) + np.array([18, 6, 0], np.float32),
    "cooler": lambda x: x * np.array([0.8, 0.95, 1.1], np.float32) + np.array([0, 6, 18], np.float32),
    "brighter": lambda x: x * 1.2 + 20,
    "darker": lambda x: x * 0.6,
    "more contrast": lambda x: (x - 128) * 1.4 + 128,
    "faded": lambda x: x * 0.6 + np.array([80, 76, 70], np.float32),
    "snow": lambda x: x * 0.7 + 0.3 * 245,   # the whitening; flakes are drawn on top
}
LOOKS = tuple(LOOK_FUNCTIONS)
PHRASES: dict[str, tuple[str, ...]] = {
    "black and white": se.TEMPLATES["black and white"],
    "sepia": ("make it sepia", "give it a sepia tone", "make it look like an old photo"),
    "night": se.TEMPLATES["night"],
    "warmer": se.TEMPLATES["warmer"],
    "cooler": ("make it cooler", "give it cool tones", "make the colours colder"),
    "brighter": ("make it brighter", "brighten it", "increase the brightness"),
    "darker": ("make it darker", "darken it", "decrease the brightness"),
    "more contrast": ("add more contrast", "increase the contrast", "make it more contrasty"),
    "faded": ("make it faded", "give it a faded look", "wash out the colours"),
    "snow": se.TEMPLATES["snow"],
}
LOCAL_FAMILIES = ("recolour", "remove", "add")
LOOK_SHARE = 0.7   # the rest: SynthEdit shapes on the photo
FLAKES = 60


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def apply_look(image: Image.Image | np.ndarray, look: str, flake_seed: int = 0) -> Image.Image:
    """The look of a whole image at its own size (snow flakes in frame fractions, so the same at any size)."""
    x = np.asarray(image, np.float32)[..., :3].copy()
    y = LOOK_FUNCTIONS[look](x)
    if look == "snow":
        h, w = y.shape[:2]
        _, _, unit, to_px = se._frame(w, h, None, w / h)
        for flake in _flakes(flake_seed):
            se._draw(y, flake, (250, 250, 255), unit, to_px)
    return Image.fromarray(np.clip(y + 0.5, 0, 255).astype(np.uint8))


def _flakes(seed: int) -> list[se.Shape]:
    rng = np.random.default_rng([seed, 23])
    return [se.Shape("circle", "white", float(x), float(y), float(r))
            for x, y, r in zip(rng.random(FLAKES), rng.random(FLAKES), rng.uniform(0.006, 0.014, FLAKES))]


@dataclass(frozen=True)
class PhotoEditExample:
    """One instruction pair on one photo window; `photo` is the decoded photo (not compared)."""

    photo_id: str
    seed: int
    window: Window
    family: str                      # a LOOKS name's family "global", or recolour / remove / add
    instruction: str
    look: str | None = None
    scene: se.EditExample | None = None   # the SynthEdit example whose shapes go onto the photo
    photo: Image.Image | None = field(default=None, compare=False, repr=False)

    @property
    def aspect(self) -> float:
        u0, v0, u1, v1 = self.window
        return (u1 - u0) * self.photo.width / ((v1 - v0) * self.photo.height)

    def size(self, long_side: int) -> tuple[int, int]:
        a = self.aspect
        return (long_side, max(1, round(long_side / a))) if a >= 1 else (max(1, round(long_side * a)), long_side)

    def background(self, width: int, height: int) -> Image.Image:
        """The photo window resized to width x height (Lanczos after a box pre-reduction, as PIL's
        `reducing_gap` does: several times faster from a 4K+ photo, and the same function at every size)."""
        u0, v0, u1, v1 = self.window
        pw, ph = self.photo.size
        box = (u0 * pw, v0 * ph, u1 * pw, v1 * ph)
        return self.photo.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)

    def _shapes(self, base: Image.Image, scene: se.Scene) -> np.ndarray:
        img = np.asarray(base, np.float32).copy()
        h, w = img.shape[:2]
        _, _, unit, to_px = se._frame(w, h, None, w / h)
        for s in scene.shapes:
            se._draw(img, s, se.COLOURS[s.colour], unit, to_px)
        return img

    def source(self, width: int, height: int) -> Image.Image:
        base = self.background(width, height)
        if self.scene is None:
            return base
        return Image.fromarray(np.clip(self._shapes(base, self.scene.source_scene) + 0.5, 0, 255).astype(np.uint8))

    def target(self, width: int, height: int) -> Image.Image:
        if self.look is not None:
            return apply_look(self.background(width, height), self.look, self.seed)
        base = self.background(width, height)
        return Image.fromarray(np.clip(self._shapes(base, self.scene.target_scene) + 0.5, 0, 255).astype(np.uint8))

    def edit_mask(self, width: int, height: int) -> np.ndarray:
        """True where the edit is meant to change pixels: everywhere for a look, the shape for a local edit."""
        if self.look is not None:
            return np.ones((height, width), bool)
        a = np.asarray(self.source(width, height), np.int16)
        b = np.asarray(self.target(width, height), np.int16)
        return np.abs(a - b).max(axis=2) > 6


def random_window(rng: np.random.Generator, photo_size: tuple[int, int], aspect: float,
                  min_share: float = 0.08) -> Window:
    """A window of the given aspect covering a log-uniform share (min_share..1) of the photo's short
    side fit: whole photos down to 1:1 detail crops."""
    pw, ph = photo_size
    wmax = min(pw, ph * aspect)          # the largest window of this aspect that fits
    s = float(np.exp(rng.uniform(np.log(min_share), 0.0)))
    w = wmax * s
    h = w / aspect
    x = float(rng.uniform(0, pw - w))
    y = float(rng.uniform(0, ph - h))
    return (x / pw, y / ph, (x + w) / pw, (y + h) / ph)


def sample(photo: Image.Image, photo_id: str, seed: int, family: str | None = None, look: str | None = None,
           whole: bool = False) -> PhotoEditExample:
    """The example for (photo_id, seed): a look (LOOK_SHARE of seeds) or a SynthEdit shape edit on a window
    of the photo; `whole` uses the whole photo (evaluation), `look` forces a look."""
    rng = _rng("photoedit", photo_id, seed)
    aspect = se._pick(rng, [a for a, _ in se.ASPECTS], p=[w for _, w in se.ASPECTS])
    if photo.height > photo.width:
        aspect = 1 / aspect
    window = (0.0, 0.0, 1.0, 1.0) if whole else random_window(rng, photo.size, aspect)
    if look is None and family is None:
        family = "global" if rng.random() < LOOK_SHARE else se._pick(rng, LOCAL_FAMILIES)
    if look is not None or family == "global":
        look = look or se._pick(rng, LOOKS)
        return PhotoEditExample(photo_id, seed, window, "global", se._pick(rng, PHRASES[look]), look=look, photo=photo)
    ex = se.sample(int(rng.integers(*se.SPLITS["train"])), artifact_fraction=0.0, family=family)
    w0, v0, w1, v1 = window
    frame_aspect = (w1 - w0) * photo.width / ((v1 - v0) * photo.height)
    ex = replace(ex, source_scene=replace(ex.source_scene, aspect=frame_aspect),
                 target_scene=replace(ex.target_scene, aspect=frame_aspect))
    return PhotoEditExample(photo_id, seed, window, family, ex.instruction, scene=ex, photo=photo)
