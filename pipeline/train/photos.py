"""PhotoEdit in training: the pool step and the photo triples the editor and the edit-region model mix in.

`python -m pipeline.train photos` fetches the photo pool (see `pipeline.photos`) and prints its
manifest. The other parts call `edit_triples` / `region_rows`, which draw only from the *train*
split of the pool; validation and test photos (the demo's examples among them) never reach a batch.
Without a pool they return nothing and training is SynthEdit only.
"""
from __future__ import annotations

import argparse
import subprocess
from collections import Counter
from collections.abc import Callable

import numpy as np

from pipeline import photoedit as pe
from pipeline import photos
from pipeline import synthedit as se
from pipeline.train.common import progress_bar
from pipeline.train.data import edit_size, flat_added_shape

PHOTO_FAMILY = "photo:{}"   # family tag of photo triples in the training pools


def train(args: argparse.Namespace) -> list[photos.Photo]:
    """Fetch the pool; where the packages cannot be fetched (no registry), say so and train without photos."""
    try:
        pool = photos.build_pool()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"photo pool: not fetched ({e}); training continues on SynthEdit only")
        return []
    counts = Counter(p.split for p in pool)
    print(f"photo pool: {len(pool)} photos in {photos.photo_dir()} ({dict(counts)})")
    for p in pool:
        print(f"  {p.split:10s} {p.id:55s} {p.width}x{p.height} {p.licence}")
    return pool


PHOTO_SHARE = 0.3  # PhotoEdit triples per SynthEdit triple when --photos is not given


def photo_count(args: argparse.Namespace) -> int:
    """How many PhotoEdit triples a part mixes in: --photos, else PHOTO_SHARE of --pool; 0 without a pool."""
    n = args.photos if getattr(args, "photos", None) is not None else round(PHOTO_SHARE * args.pool)
    return n if photos.load_pool(split="train") else 0


def photo_examples(n: int, seed: int, split: str = "train", max_side: int | None = None):
    """n PhotoEdit examples spread evenly over the split's photos (one decode per photo); with
    `max_side`, cut from a copy of each photo reduced to that long side (fast for thumbnails)."""
    pool = photos.load_pool(split=split)
    if not pool or n <= 0:
        return
    per = np.full(len(pool), n // len(pool))
    per[: n % len(pool)] += 1
    for p, k in zip(pool, per):
        image = photos.open_photo(str(p.file()))
        if max_side is not None:
            image = image.copy()  # the decode is cached and shared: reduce a copy
            image.thumbnail((max_side, max_side))
        for i in range(int(k)):
            yield pe.sample(image, p.id, seed * 1_000_003 + i)


def edit_triples(n: int, seed: int = 0) -> dict:
    """{(w, h): dict(src, tgt, text, family, art)} like the editor's SynthEdit pool (art all False)."""
    groups: dict[tuple[int, int], dict] = {}
    bar = progress_bar(n, 0, "render photo pool")
    for ex in photo_examples(n, seed):
        w, h = edit_size(ex.aspect)
        g = groups.setdefault((w, h), {"src": [], "tgt": [], "text": [], "family": [], "art": []})
        g["src"].append(np.asarray(ex.source(w, h)))
        g["tgt"].append(np.asarray(ex.target(w, h)))
        g["text"].append(ex.instruction)
        g["family"].append(PHOTO_FAMILY.format(ex.family))
        g["art"].append(False)
        bar.update(1)
    bar.close()
    for g in groups.values():
        g["src"], g["tgt"] = np.stack(g["src"]), np.stack(g["tgt"])
    return groups


def region_rows(n: int, seed: int = 0, split: str = "train", *, resolution: int,
                kind_of: Callable[[str | None], int]) -> list:
    """Rows of the edit-region pool: (source at `resolution`, mask, instruction, family, kind map, named
    kind, target); `kind_of` is the region trainer's label of the named thing (passed in: this module is data)."""
    rows = []
    for ex in photo_examples(n, seed + 101, split):
        w, h = edit_size(ex.aspect, resolution, 16)
        image = np.asarray(ex.source(w, h))
        if ex.scene is None:
            kinds, thing = np.zeros((h, w), np.int8), None
        else:
            kinds = se.kind_map(ex.scene.source_scene, w, h)
            sc = ex.scene
            thing = (sc.removed.kind if sc.family == "remove" else sc.target_scene.shapes[sc.changed[0]].kind)
        mask, target = ex.edit_mask(w, h), np.asarray(ex.target(w, h))
        if ex.scene is not None:
            target = flat_added_shape(ex.scene, target, mask)
        rows.append((image, mask, ex.instruction, PHOTO_FAMILY.format(ex.family), kinds, kind_of(thing), target))
    return rows


def autoencoder_images(rng: np.random.Generator, n: int, crop: int = 128) -> list:
    """n photo crops (sources or looks) at crop x crop, windows from whole photos to 1:1 detail."""
    pool = photos.load_pool(split="train")
    out = []
    for _ in range(n if pool else 0):
        p = pool[int(rng.integers(len(pool)))]
        ex = pe.sample(photos.open_photo(str(p.file())), p.id, int(rng.integers(1 << 30)))
        while ex.aspect < 0.999 or ex.aspect > 1.001:   # square windows only: batches share one size
            ex = pe.sample(ex.photo, p.id, int(rng.integers(1 << 30)))
        out.append(ex.source(crop, crop) if rng.random() < 0.5 else ex.target(crop, crop))
    return out
