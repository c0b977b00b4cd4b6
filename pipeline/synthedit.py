"""SynthEdit: a procedural instruction-editing dataset with exact ground truth at any resolution.

Every example is a pure function of its seed. A scene (textured background + a few named shapes,
each of a different kind) is stored as *vector* data in normalised coordinates and rasterised on
demand with supersampled anti-aliasing, so the same scene, its edited target and the edit mask
exist at 128 px, 512 px and 3840x2160 alike (and any window of them, which training uses to get
high-resolution crops without rendering whole 4K frames).

    ex = sample(2_000_003)                  # a test-split example
    ex.instruction, ex.family               # "make the circle green", "recolour"
    ex.source(512, 512), ex.target(512, 512), ex.edit_mask(512, 512)
    split_seeds("test", 64)

Families: recolour, remove, add (with a position word, so the target is unambiguous), background,
global (looks: black and white, night, snow, warmer). Like InstructPix2Pix's generated data (about
30% of its targets hallucinate), a configurable share of *training* targets carries injected
artifacts with known masks: spurious blobs, duplicated fragments, smears, warps, colour bleeding.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225), "yellow": (245, 215, 40),
    "purple": (140, 60, 185), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (25, 25, 25),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128), "beige": (215, 195, 160), "teal": (40, 130, 130), "brown": (120, 80, 50),
    "navy": (30, 40, 100), "olive": (120, 130, 50), "pink": (235, 150, 180), "purple": (110, 60, 150),
    "sky blue": (120, 180, 230), "dark green": (30, 90, 50),
}
KINDS = ("circle", "square", "triangle", "star", "stripes", "line")
TEXTURES = ("flat", "noise", "brick", "grass", "gravel", "moon")
LOOKS = ("black and white", "night", "snow", "warmer")
FAMILIES = ("recolour", "remove", "add", "background", "global")
FAMILY_WEIGHTS = (0.26, 0.2, 0.2, 0.14, 0.2)
ASPECTS = ((1.0, 0.55), (16 / 9, 0.25), (4 / 3, 0.2))
POSITIONS = {
    "in the top left": (0.2, 0.22), "at the top": (0.5, 0.22), "in the top right": (0.8, 0.22),
    "on the left": (0.2, 0.5), "in the centre": (0.5, 0.5), "on the right": (0.8, 0.5),
    "in the bottom left": (0.2, 0.78), "at the bottom": (0.5, 0.78), "in the bottom right": (0.8, 0.78),
}
ARTIFACTS = ("blob", "duplicate", "smear", "warp", "bleed")

SPLITS = {"train": (0, 1_000_000), "validation": (1_000_000, 1_100_000), "test": (2_000_000, 2_100_000)}
DEFAULT_ARTIFACT_FRACTION = 0.3

TEMPLATES = {
    "recolour": ("make the {kind} {new}", "turn the {old} {kind} {new}", "change the colour of the {kind} to {new}",
                 "paint the {kind} {new}", "recolor the {old} {kind} {new}"),
    "remove": ("remove the {kind}", "delete the {old} {kind}", "take away the {kind}", "get rid of the {old} {kind}"),
    "add": ("add {thing} {where}", "put {thing} {where}", "draw {thing} {where}"),
    "background": ("make the background {new}", "change the background to {new}", "turn the background {new}",
                   "give it {a_new} background"),
    "black and white": ("make it black and white", "convert it to grayscale", "make it monochrome", "remove the colours"),
    "night": ("make it night", "turn it into night", "make it look like night time"),
    "snow": ("add snow", "make it snowy", "let it snow"),
    "warmer": ("make it warmer", "give it warm tones", "make the colours warmer"),
}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cx: float            # centre, fraction of the width
    cy: float            # centre, fraction of the height
    size: float          # half-extent, fraction of the scene's short side
    angle: float = 0.0   # radians


@dataclass(frozen=True)
class Scene:
    aspect: float                     # width / height of the native frame
    background: str                   # a BACKGROUNDS name
    texture: str                      # a TEXTURES name
    texture_seed: int
    shapes: tuple[Shape, ...]
    look: str | None = None           # a LOOKS name applied after drawing


@dataclass(frozen=True)
class Artifact:
    kind: str
    seed: int


@dataclass(frozen=True)
class EditExample:
    seed: int
    split: str
    family: str
    instruction: str
    source_scene: Scene
    target_scene: Scene
    changed: tuple[int, ...] = ()                   # indices into target_scene.shapes that the edit touched
    removed: Shape | None = None
    artifacts: tuple[Artifact, ...] = field(default=())

    @property
    def look(self) -> str | None:
        return self.target_scene.look if self.family == "global" else None

    @property
    def has_artifacts(self) -> bool:
        return bool(self.artifacts)

    def size(self, long_side: int) -> tuple[int, int]:
        """(width, height) of the native aspect with the given long side."""
        a = self.source_scene.aspect
        return (long_side, max(1, round(long_side / a))) if a >= 1 else (max(1, round(long_side * a)), long_side)

    def source(self, width: int, height: int, window: Window | None = None) -> Image.Image:
        return render(self.source_scene, width, height, window)

    def target(self, width: int, height: int, window: Window | None = None, artifacts: bool = True) -> Image.Image:
        image = render(self.target_scene, width, height, window)
        if artifacts and self.artifacts:
            image = Image.fromarray(_apply_artifacts(np.asarray(image), self, width, height, window))
        return image

    def edit_mask(self, width: int, height: int, window: Window | None = None) -> np.ndarray:
        """Pixels the (clean) edit is meant to change: True where source and clean target differ."""
        a = np.asarray(self.source(width, height, window), dtype=np.int16)
        b = np.asarray(self.target(width, height, window, artifacts=False), dtype=np.int16)
        return np.abs(a - b).max(axis=2) > 6

    def artifact_mask(self, width: int, height: int, window: Window | None = None) -> np.ndarray:
        """Pixels where injected artifacts changed the target (all False for clean examples)."""
        if not self.artifacts:
            return np.zeros((height, width), dtype=bool)
        a = np.asarray(self.target(width, height, window, artifacts=False), dtype=np.int16)
        b = np.asarray(self.target(width, height, window), dtype=np.int16)
        return np.abs(a - b).max(axis=2) > 12


Window = tuple[float, float, float, float]  # (u0, v0, u1, v1): a sub-rectangle of the scene, in [0, 1] fractions


def split_of(seed: int) -> str:
    for name, (lo, hi) in SPLITS.items():
        if lo <= seed < hi:
            return name
    raise ValueError(f"seed {seed} is in no split; ranges: {SPLITS}")


def split_seeds(split: str, n: int, offset: int = 0) -> list[int]:
    lo, hi = SPLITS[split]
    if offset + n > hi - lo:
        raise ValueError(f"split {split!r} has only {hi - lo} seeds")
    return list(range(lo + offset, lo + offset + n))


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(rng: np.random.Generator, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


def _random_shape(rng: np.random.Generator, kind: str, colour: str, aspect: float) -> Shape:
    size = float(rng.uniform(0.12, 0.24)) if kind not in ("line", "stripes") else float(rng.uniform(0.16, 0.28))
    mx = size / aspect + 0.03 if aspect >= 1 else size + 0.03
    my = size + 0.03 if aspect >= 1 else size * aspect + 0.03
    return Shape(kind, colour, float(rng.uniform(mx, 1 - mx)), float(rng.uniform(my, 1 - my)), size,
                 float(rng.uniform(0, math.pi)))


def random_scene(rng: np.random.Generator, aspect: float | None = None, n_shapes: tuple[int, int] = (1, 4)) -> Scene:
    if aspect is None:
        aspect = _pick(rng, [a for a, _ in ASPECTS], p=[w for _, w in ASPECTS])
    n = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
    kinds = list(rng.permutation(KINDS)[:n])
    shapes = tuple(_random_shape(rng, k, _pick(rng, list(COLOURS)), aspect) for k in kinds)
    return Scene(aspect=aspect, background=_pick(rng, list(BACKGROUNDS)), texture=_pick(rng, TEXTURES),
                 texture_seed=int(rng.integers(1 << 30)), shapes=shapes)


def sample(seed: int, artifact_fraction: float | None = None, family: str | None = None) -> EditExample:
    """The example for `seed` (deterministic). Only training seeds get artifacts (`artifact_fraction`,
    default 0.3); `family` forces an edit family (the rest of the example still follows the seed)."""
    split = split_of(seed)
    rng = _rng("synthedit", seed)
    scene = random_scene(rng)
    family = family or _pick(rng, FAMILIES, p=FAMILY_WEIGHTS)
    shapes = list(scene.shapes)
    changed: tuple[int, ...] = ()
    removed = None
    target = scene
    if family in ("recolour", "remove"):
        i = int(rng.integers(len(shapes)))
        s = shapes[i]
        fmt = {"kind": s.kind, "old": s.colour}
        if family == "recolour":
            new = _pick(rng, [c for c in COLOURS if c != s.colour])
            shapes[i] = replace(s, colour=new)
            fmt["new"] = new
            changed = (i,)
        else:
            removed = shapes.pop(i)
        target = replace(scene, shapes=tuple(shapes))
        instruction = _pick(rng, TEMPLATES[family]).format(**fmt)
    elif family == "add":
        kind = _pick(rng, [k for k in KINDS if k not in {s.kind for s in shapes}] or list(KINDS))
        colour = _pick(rng, list(COLOURS))
        where = _pick(rng, list(POSITIONS))
        cx, cy = POSITIONS[where]
        new = Shape(kind, colour, cx, cy, 0.17, 0.0 if kind != "line" else math.pi / 4)
        target = replace(scene, shapes=(*shapes, new))
        changed = (len(shapes),)
        thing = f"{colour} stripes" if kind == "stripes" else f"{_article(colour)} {colour} {kind}"
        instruction = _pick(rng, TEMPLATES["add"]).format(thing=thing, where=where)
    elif family == "background":
        new = _pick(rng, [b for b in BACKGROUNDS if b != scene.background])
        target = replace(scene, background=new)
        instruction = _pick(rng, TEMPLATES["background"]).format(new=new, a_new=f"{_article(new)} {new}")
    else:
        look = _pick(rng, LOOKS)
        target = replace(scene, look=look)
        instruction = _pick(rng, TEMPLATES[look])
    fraction = DEFAULT_ARTIFACT_FRACTION if artifact_fraction is None else artifact_fraction
    artifacts: tuple[Artifact, ...] = ()
    arng = _rng("artifacts", seed)
    if split == "train" and arng.random() < fraction:
        artifacts = tuple(Artifact(_pick(arng, ARTIFACTS), int(arng.integers(1 << 30)))
                          for _ in range(int(arng.integers(1, 3))))
    return EditExample(seed=seed, split=split, family=family, instruction=instruction, source_scene=scene,
                       target_scene=target, changed=changed, removed=removed, artifacts=artifacts)


# ---------------------------------------------------------------- rendering

@lru_cache(maxsize=8)
def _texture_image(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("L")


@lru_cache(maxsize=64)
def _noise_image(seed: int) -> Image.Image:
    """Two octaves of value noise on a 512 px grid (smooth enough to be resolution-consistent)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8)).resize((512, 512), Image.Resampling.BICUBIC)
    fine = Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).resize((512, 512), Image.Resampling.BICUBIC)
    return Image.fromarray((0.65 * np.asarray(coarse, np.float32) + 0.35 * np.asarray(fine, np.float32)).astype(np.uint8))


def _background(scene: Scene, width: int, height: int, window: Window, full: tuple[float, float]) -> np.ndarray:
    colour = np.array(BACKGROUNDS[scene.background], np.float32)
    if scene.texture == "flat":
        return np.broadcast_to(colour, (height, width, 3)).copy()
    tex = _noise_image(scene.texture_seed) if scene.texture == "noise" else _texture_image(scene.texture)
    rng = np.random.default_rng(scene.texture_seed)
    tw = float(rng.uniform(0.25, 0.5)) * tex.width  # a zoomed-in crop: fine detail at 4K, smooth at 128 px
    th = min(tex.height, tw / scene.aspect)
    tw = th * scene.aspect if tw > tex.width else tw
    ox, oy = rng.uniform(0, tex.width - tw), rng.uniform(0, tex.height - th)
    u0, v0, u1, v1 = window
    fw, fh = full
    if fw < tw:  # downsampling: resample the whole frame with a low-pass filter first, then crop
        w_full, h_full = max(1, round(fw)), max(1, round(fh))
        frame = tex.resize((w_full, h_full), Image.Resampling.LANCZOS, box=(ox, oy, ox + tw, oy + th))
        crop = frame.transform((width, height), Image.Transform.EXTENT,
                               (u0 * w_full, v0 * h_full, u1 * w_full, v1 * h_full), Image.Resampling.BICUBIC)
    else:
        crop = tex.transform((width, height), Image.Transform.EXTENT,
                             (ox + u0 * tw, oy + v0 * th, ox + u1 * tw, oy + v1 * th), Image.Resampling.BICUBIC)
    t = np.asarray(crop, np.float32) / 255.0
    t = (t - 0.5) * (0.5 / max(1e-3, float(np.asarray(tex, np.float32).std() / 255.0 * 2))) + 0.5
    return colour * np.clip(0.7 + 0.3 * t, 0.45, 1.2)[..., None]


def _shape_ops(s: Shape, unit: float, to_px) -> list[tuple[str, list[tuple[float, float]]]]:
    """Drawing ops in output pixel coordinates: ('poly', points) or ('ellipse', [p0, p1])."""
    cx, cy = to_px(s.cx, s.cy)
    r = s.size * unit
    ca, sa = math.cos(s.angle), math.sin(s.angle)

    def rot(x, y):
        return (cx + x * ca - y * sa, cy + x * sa + y * ca)

    if s.kind == "circle":
        return [("ellipse", [(cx - r, cy - r), (cx + r, cy + r)])]
    if s.kind == "square":
        h = r * 0.85
        return [("poly", [rot(-h, -h), rot(h, -h), rot(h, h), rot(-h, h)])]
    if s.kind == "triangle":
        return [("poly", [rot(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])]
    if s.kind == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append(rot(rr * math.cos(a), rr * math.sin(a)))
        return [("poly", pts)]
    if s.kind == "stripes":
        n, h = 5, r * 0.9
        bar = 2 * h / (2 * n - 1)
        ops = []
        for k in range(n):
            x0 = -h + 2 * k * bar
            ops.append(("poly", [rot(x0, -h), rot(x0 + bar, -h), rot(x0 + bar, h), rot(x0, h)]))
        return ops
    if s.kind == "line":
        w = max(0.012 * unit, 0.0) / 2
        return [("poly", [rot(-r, -w), rot(r, -w), rot(r, w), rot(-r, w)])]
    raise ValueError(s.kind)


def _coverage(ops, width: int, height: int, ss: int) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Anti-aliased coverage of the ops, cropped to their bounding box: (alpha, (x0, y0, x1, y1))."""
    xs = [p[0] for _, pts in ops for p in pts]
    ys = [p[1] for _, pts in ops for p in pts]
    x0, y0 = max(0, math.floor(min(xs)) - 1), max(0, math.floor(min(ys)) - 1)
    x1, y1 = min(width, math.ceil(max(xs)) + 2), min(height, math.ceil(max(ys)) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(mask)
    for op, pts in ops:
        q = [((x - x0) * ss, (y - y0) * ss) for x, y in pts]
        if op == "ellipse":
            draw.ellipse([q[0], (q[1][0] - 1, q[1][1] - 1)], fill=255)
        else:
            draw.polygon(q, fill=255)
    return np.asarray(mask.reduce(ss), np.float32)[..., None] / 255.0, (x0, y0, x1, y1)


def _frame(width: int, height: int, window: Window | None, aspect: float):
    window = window or (0.0, 0.0, 1.0, 1.0)
    u0, v0, u1, v1 = window
    fw, fh = width / (u1 - u0), height / (v1 - v0)     # pixel size of the whole frame at this scale
    unit = min(fw, fh)

    def to_px(u, v):
        return ((u - u0) * fw, (v - v0) * fh)

    return window, (fw, fh), unit, to_px


def _draw(img: np.ndarray, shape: Shape, colour, unit: float, to_px, alpha: float = 1.0) -> None:
    h, w = img.shape[:2]
    ss = 4 if unit < 1024 else 2
    cov = _coverage(_shape_ops(shape, unit, to_px), w, h, ss)
    if cov is None:
        return
    a, (x0, y0, x1, y1) = cov
    a = a * alpha
    region = img[y0:y1, x0:x1]
    region *= 1 - a
    region += a * np.asarray(colour, np.float32)


def _snowflakes(scene: Scene) -> list[Shape]:
    rng = np.random.default_rng(scene.texture_seed + 7)
    return [Shape("circle", "white", float(x), float(y), float(r)) for x, y, r in
            zip(rng.random(60), rng.random(60), rng.uniform(0.006, 0.014, 60))]


def _apply_look(img: np.ndarray, look: str | None) -> np.ndarray:
    if look is None or look == "snow":
        return img
    if look == "black and white":
        y = img @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.repeat(y[..., None], 3, axis=2)
    if look == "night":
        return img * np.array([0.3, 0.36, 0.55], np.float32) + np.array([5, 8, 22], np.float32)
    if look == "warmer":
        return img * np.array([1.1, 1.0, 0.78], np.float32) + np.array([18, 6, 0], np.float32)
    raise ValueError(look)


def render(scene: Scene, width: int, height: int, window: Window | None = None) -> Image.Image:
    """Rasterise `scene` into width x height pixels covering `window` (default: the whole frame)."""
    window, full, unit, to_px = _frame(width, height, window, scene.aspect)
    img = _background(scene, width, height, window, full)
    for s in scene.shapes:
        _draw(img, s, COLOURS[s.colour], unit, to_px)
    if scene.look == "snow":
        img = img * 0.7 + 0.3 * 245
        for flake in _snowflakes(scene):
            _draw(img, flake, (250, 250, 255), unit, to_px)
    img = _apply_look(img, scene.look)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------- injected artifacts (training targets only)

def _soft_disk(width, height, to_px, unit, cx, cy, r) -> np.ndarray:
    px, py = to_px(cx, cy)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    d = np.sqrt((xx - px) ** 2 + (yy - py) ** 2) / max(r * unit, 1e-3)
    return np.clip((1 - d) * 4, 0, 1)[..., None]


def _apply_artifacts(image: np.ndarray, ex: EditExample, width: int, height: int, window: Window | None) -> np.ndarray:
    """Hallucination-like damage drawn in scene coordinates, so it is consistent across resolutions."""
    from scipy import ndimage

    window, full, unit, to_px = _frame(width, height, window, ex.target_scene.aspect)
    img = image.astype(np.float32).copy()
    for art in ex.artifacts:
        rng = np.random.default_rng(art.seed)
        cx, cy = float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85))
        shapes = ex.target_scene.shapes
        if art.kind == "blob":
            colour = rng.integers(0, 256, 3)
            for _ in range(3):
                s = Shape("circle", "white", cx + float(rng.normal(0, 0.04)), cy + float(rng.normal(0, 0.04)),
                          float(rng.uniform(0.03, 0.08)))
                _draw(img, s, colour, unit, to_px, alpha=0.85)
        elif art.kind == "duplicate" and shapes:
            s = shapes[int(rng.integers(len(shapes)))]
            frag = replace(s, cx=cx, cy=cy, size=s.size * float(rng.uniform(0.4, 0.8)),
                           angle=s.angle + float(rng.uniform(-0.6, 0.6)))
            _draw(img, frag, COLOURS[s.colour], unit, to_px, alpha=0.9)
        elif art.kind == "smear":
            disk = _soft_disk(width, height, to_px, unit, cx, cy, float(rng.uniform(0.12, 0.22)))
            ang = float(rng.uniform(0, math.pi))
            length = 0.08 * unit
            acc = np.zeros_like(img)
            for k in range(9):
                f = (k / 8 - 0.5) * length
                acc += ndimage.shift(img, (f * math.sin(ang), f * math.cos(ang), 0), order=1, mode="nearest")
            img = img * (1 - disk) + acc / 9 * disk
        elif art.kind == "warp":
            disk = _soft_disk(width, height, to_px, unit, cx, cy, float(rng.uniform(0.15, 0.25)))[..., 0]
            yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
            freq = 2 * math.pi / (0.12 * unit)
            amp = 0.035 * unit * disk
            coords = [yy + amp * np.sin(xx * freq), xx + amp * np.cos(yy * freq)]
            img = np.stack([ndimage.map_coordinates(img[..., c], coords, order=1, mode="nearest") for c in range(3)], 2)
        elif art.kind == "bleed" and shapes:
            s = shapes[int(rng.integers(len(shapes)))]
            grown = replace(s, size=s.size * 1.35)
            _draw(img, grown, COLOURS[s.colour], unit, to_px, alpha=0.45)
            _draw(img, s, COLOURS[s.colour], unit, to_px)
        else:  # no shape to duplicate/bleed: a blob instead
            _draw(img, Shape("circle", "white", cx, cy, 0.06), rng.integers(0, 256, 3), unit, to_px, alpha=0.85)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- instructions that name nothing in the scene

# Nouns SynthEdit never draws, split so evaluation uses words no training negative contained.
ABSENT_NOUNS = {
    "train": ("cat", "car", "tree", "house", "person", "bird", "flower", "boat", "chair", "cloud", "horse", "lamp",
              "book", "cup", "hat", "window", "bottle", "fish"),
    "held_out": ("dog", "bicycle", "apple", "clock", "guitar"),
}


def absent_instruction(example: EditExample, rng: np.random.Generator, nouns: str = "train") -> tuple[str, str]:
    """A recolour or remove instruction naming something the source does not contain (a shape kind it
    lacks, or a noun SynthEdit never draws): its edit region is empty and the right output is the source.
    Returns (instruction, the thing it names)."""
    present = {s.kind for s in example.source_scene.shapes}
    kinds = [k for k in KINDS if k not in present]
    thing = _pick(rng, kinds) if kinds and rng.random() < 0.5 else _pick(rng, ABSENT_NOUNS[nouns])
    family = _pick(rng, ("recolour", "remove"))
    colours = list(COLOURS)
    return _pick(rng, TEMPLATES[family]).format(kind=thing, old=_pick(rng, colours), new=_pick(rng, colours)), thing


def kind_map(scene: Scene, width: int, height: int) -> np.ndarray:
    """(height, width) int8: 1 + the KINDS index of the shape covering each pixel (the last drawn wins), 0
    where no shape is; the labels of the edit-region model's auxiliary loss."""
    window, _full, unit, to_px = _frame(width, height, None, scene.aspect)
    out = np.zeros((height, width), np.int8)
    for s in scene.shapes:
        cov = _coverage(_shape_ops(s, unit, to_px), width, height, 4)
        if cov is None:
            continue
        a, (x0, y0, x1, y1) = cov
        region = out[y0:y1, x0:x1]
        region[a[..., 0] > 0.5] = KINDS.index(s.kind) + 1
    return out
