"""What a benchmark runs: methods x output sizes x SynthEdit test images, and the budget policy.

Every run is one edit of one test image at one output size by one method, in its own process.
Cost statistics of a (method, size) cell are taken over its runs (each on a different test image:
every method's cost is content-independent, which the tables check through the U-Net evaluation
counts); quality statistics are paired by test image across methods.

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
    """Runs per (method, size) cell; `caps` limit the slow baselines; `derive` replaces a cell's runs
    by a derived cost: ("same", size0) = the cost measured at size0 (same work), ("patches", size0)
    = size0's cost x patches(size) / patches(size0)."""

    images: dict[str, int]
    default_images: int
    caps: dict[tuple[str, str], int] = field(default_factory=dict)
    derive: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def runs_for(self, method: str, size: str) -> int:
        if (method, size) in self.derive:
            return 0
        n = self.images.get(size, self.default_images)
        return min(n, self.caps.get((method, size), n))


def long_side(size: str) -> int:
    return max(output_size(size))


FULL_POLICY_NOTES = [
    "runs per cell: --repeats at 1024 (at least 3), 2 at 2048, 1 at 4K: a 4K run of a tiled method takes about "
    "3 minutes here, almost all of it the tiled decode, so three repeats of every method at every size do not "
    "fit in 30 minutes. Each run is a different test image (cost is content-independent; quality is paired).",
    "ip2p-realesrgan makes the same two x4 passes of the real Real-ESRGAN x4plus (16.7M parameters) at every size "
    "from 1024 to 4K (128 -> 512 -> 2048 px, then a bicubic resize): it runs once, at the smallest size; the "
    "larger sizes show that cost as derived (the final resize differs) and have no quality rows.",
    "ip2p-patchwise edits one standard-resolution patch per 128x128 block of the output (40 at 1024, 510 at 4K, "
    "each a full 20-step edit): it runs once, at the smallest size; larger sizes are derived as that cost x the "
    "patch-count ratio and have no quality rows.",
    "ip2p-direct is refused by its time budget at every size here (a failure row in well under a second, carrying "
    "the time estimated from exact FLOPs / this machine's measured U-Net throughput, shown as derived); one "
    "calibration run at 512 px without a budget (direct_calibration.csv) compares that estimate with a real run.",
]


def full_policy(sizes: list[str], repeats: int, images: int | None) -> Policy:
    """The budget for the documented full run (about 30 minutes on 2 shared CPU cores, mini set)."""
    def per_size(s: str) -> int:
        if images is not None:
            return images
        side = long_side(s)
        return max(repeats, 3) if side <= 1024 else (min(repeats, 2) if side <= 2048 else 1)

    ordered = sorted(sizes, key=long_side)
    first = ordered[0]
    derive: dict[tuple[str, str], tuple[str, str]] = {}
    caps: dict[tuple[str, str], int] = {}
    for s in sizes:
        caps[("ip2p-direct", s)] = 1
        if s != first:
            derive[("ip2p-realesrgan", s)] = ("same", first)
            derive[("ip2p-patchwise", s)] = ("patches", first)
    caps[("ip2p-realesrgan", first)] = 1
    caps[("ip2p-patchwise", first)] = 1
    return Policy(images={s: per_size(s) for s in sizes}, default_images=images or 1, caps=caps, derive=derive,
                  notes=list(FULL_POLICY_NOTES))


def quick_policy(sizes: list[str]) -> Policy:
    return Policy(images={s: QUICK_IMAGES for s in sizes}, default_images=QUICK_IMAGES,
                  notes=["--quick: one test image, 2 edit steps, one size: a smoke test of every file, not a measurement"])


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
