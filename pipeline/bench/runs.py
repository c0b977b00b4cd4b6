"""What a benchmark runs: methods x output sizes x SynthEdit test images, and the budget policy.

Every run is one edit of one test image at one output size by one method, in its own process.
Every method runs on the same test images at a size: quality is compared pairwise by image, and
a cell's cost statistics are taken over its runs (every method's cost is content-independent,
which the tables check through the U-Net evaluation counts).

Test images: the first SynthEdit test-split examples whose native aspect is 16:9 (so "4k" is
3840x2160 for every run and costs are comparable), edit families cycling recolour, remove, add,
background, global. The input image is rendered at the output resolution (a 4K photo in, 4K out).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from pipeline.inputs import parse_size

ASPECT = 16 / 9
NOMINAL_INPUT = (1600, 900)  # any 16:9 size: only the aspect matters to parse_size

QUICK_IMAGES = 1


@dataclass(frozen=True)
class BenchImage:
    index: int
    seed: int
    family: str
    instruction: str


@dataclass(frozen=True)
class Run:
    method: str
    size: str                  # as given on the command line ("1024", "4k", "1920x1080")
    width: int
    height: int
    image: BenchImage
    models: str
    quality: bool = True
    time_budget: float | None = None
    tile: int | None = None
    halo: int | None = None
    memory_budget: int | None = None
    threads: int | None = None
    steps: int | None = None   # edit steps (None: the set's; --quick uses 2)

    @property
    def cell(self) -> tuple[str, str]:
        return self.method, self.size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        """From a spec (extra keys such as "calibration" or "save_image" are the worker's, not the run's)."""
        keep = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**keep, "image": BenchImage(**d["image"])})


def output_size(size: str) -> tuple[int, int]:
    """(width, height) of a 16:9 output for a size argument ("1024", "2k", "4k", "WxH")."""
    return parse_size(size, NOMINAL_INPUT)


def bench_images(n: int) -> list[BenchImage]:
    """The first `n` 16:9 SynthEdit test examples, families cycling (deterministic)."""
    from pipeline import synthedit as se

    out: list[BenchImage] = []
    for seed in se.split_seeds("test", 5000):
        family = se.FAMILIES[len(out) % len(se.FAMILIES)]
        ex = se.sample(seed, family=family)
        if math.isclose(ex.source_scene.aspect, ASPECT, rel_tol=1e-6):
            out.append(BenchImage(len(out), seed, ex.family, ex.instruction))
            if len(out) == n:
                return out
    raise RuntimeError(f"fewer than {n} 16:9 examples in the first 5000 test seeds")


@dataclass
class Policy:
    """Runs per (method, size) cell: the same test images for every method at a size, so every
    quality comparison is paired; `derive` costs an ip2p-patchwise cell from a measured size (x the
    patch-count ratio) instead of running it; `notes` say why."""

    images: dict[str, int]
    default_images: int
    derive: dict[tuple[str, str], str] = field(default_factory=dict)  # cell -> measured size it is scaled from
    notes: list[str] = field(default_factory=list)

    def runs_for(self, method: str, size: str) -> int:
        if (method, size) in self.derive:
            return 0
        return self.images.get(size, self.default_images)


def long_side(size: str) -> int:
    return max(output_size(size))


PATCHWISE_MAX_SIDE = 2048  # above this, ip2p-patchwise is derived from the largest measured size
FULL_POLICY_NOTES = [
    "every method runs on the same test images at each size (one run per image), so every quality comparison is "
    "paired by image and the cost statistics of a cell are taken over the same inputs for every method.",
    "ip2p-patchwise edits one standard-resolution patch per block, each a full edit; above 2048 px its cost is "
    "derived, not run: the largest measured size's time, U-Net evaluations and FLOPs x the patch-count ratio (the "
    "work is exactly per patch); it has no quality row there.",
    "ip2p-direct is refused by its time budget where edit()'s estimate exceeds it (a failure row in about a second); "
    "its time there is the calibrated estimate of direct_calibration.csv (python -m pipeline bench --suite direct), "
    "shown as derived.",
]


def full_policy(sizes: list[str], images: int) -> Policy:
    """`images` test images per size for every method; ip2p-patchwise derived above PATCHWISE_MAX_SIDE."""
    measured = [s for s in sizes if long_side(s) <= PATCHWISE_MAX_SIDE]
    derive = {("ip2p-patchwise", s): max(measured, key=long_side) for s in sizes
              if long_side(s) > PATCHWISE_MAX_SIDE and measured}
    return Policy(images={s: images for s in sizes}, default_images=images, derive=derive,
                  notes=list(FULL_POLICY_NOTES))


def quick_policy(sizes: list[str]) -> Policy:
    return Policy(images={s: QUICK_IMAGES for s in sizes}, default_images=QUICK_IMAGES,
                  notes=["--quick: one test image, 2 edit steps, one size, upscaler tile 64: a smoke test of every file, "
                         "not a measurement"])


def plan_runs(methods: list[str], sizes: list[str], models: str, policy: Policy, *, quality: bool = True,
              time_budget: float | None = None, tile: int | None = None, halo: int | None = None,
              memory_budget: int | None = None, threads: int | None = None, steps: int | None = None) -> list[Run]:
    """All runs, ordered round-robin (image i of every cell before image i+1 of any) so that a
    change in machine load spreads over all methods instead of landing on one."""
    counts = {(m, s): policy.runs_for(m, s) for m in methods for s in sizes}
    images = bench_images(max(counts.values(), default=0))
    runs = []
    for i, image in enumerate(images):
        for s in sizes:
            w, h = output_size(s)
            for m in methods:
                if i < counts[(m, s)]:
                    runs.append(Run(m, s, w, h, image, models, quality, time_budget, tile, halo, memory_budget, threads, steps))
    return runs
