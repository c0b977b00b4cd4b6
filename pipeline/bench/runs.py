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

# Full run on the mini set (`--sizes 1024,2048,4k --repeats 3`): runs per cell. A cell absent
# here gets `max(repeats, images)`; the slow baselines are capped (see `docs()` for the reasons).
FULL_IMAGES = {"1024": 6, "2048": 4, "4k": 3}
QUICK_IMAGES = 1


@dataclass(frozen=True)
class TestImage:
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
    image: TestImage
    models: str
    quality: bool = True
    time_budget: float | None = None
    tile: int | None = None
    halo: int | None = None
    memory_budget: int | None = None
    threads: int | None = None

    @property
    def cell(self) -> tuple[str, str]:
        return self.method, self.size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        return cls(**{**d, "image": TestImage(**d["image"])})


def output_size(size: str) -> tuple[int, int]:
    """(width, height) of a 16:9 output for a size argument ("1024", "2k", "4k", "WxH")."""
    return parse_size(size, NOMINAL_INPUT)


def test_images(n: int) -> list[TestImage]:
    """The first `n` 16:9 SynthEdit test examples, families cycling (deterministic)."""
    from pipeline import synthedit as se

    out: list[TestImage] = []
    for seed in se.split_seeds("test", 5000):
        family = se.FAMILIES[len(out) % len(se.FAMILIES)]
        ex = se.sample(seed, family=family)
        if math.isclose(ex.source_scene.aspect, ASPECT, rel_tol=1e-6):
            out.append(TestImage(len(out), seed, ex.family, ex.instruction))
            if len(out) == n:
                return out
    raise RuntimeError(f"fewer than {n} 16:9 examples in the first 5000 test seeds")


@dataclass
class Policy:
    """Runs per (method, size) cell. `caps` limit the slow baselines; `skip` leaves cells out with a reason."""

    images: dict[str, int]
    default_images: int
    repeats: int
    caps: dict[tuple[str, str], int] = field(default_factory=dict)
    skip: dict[tuple[str, str], str] = field(default_factory=dict)

    def runs_for(self, method: str, size: str) -> int:
        if (method, size) in self.skip:
            return 0
        n = max(self.repeats, self.images.get(size, self.default_images))
        return min(n, self.caps.get((method, size), n))


def long_side(size: str) -> int:
    return max(output_size(size))


def full_policy(sizes: list[str], repeats: int, images: int | None) -> Policy:
    """The budget for the documented full run (about 25 minutes on 2 shared CPU cores, mini set).

    - ip2p-realesrgan makes two x4 passes of the real Real-ESRGAN x4plus (16.7M parameters) at every
      size from 1024 to 4K (128 -> 512 -> 2048 px, then a resize): minutes per run on a CPU, so
      one run per size.
    - ip2p-patchwise edits one standard-resolution patch per 128x128 block: 510 edits at 4K; two
      runs per size above 2048.
    - ip2p-direct above ~1K is refused by its own time budget in well under a second (a failure
      row with the FLOP estimate); it runs once per size.
    """
    per_size = {s: FULL_IMAGES.get(s, 3 if long_side(s) <= 2048 else 2) for s in sizes} if images is None else \
        {s: images for s in sizes}
    caps: dict[tuple[str, str], int] = {}
    for s in sizes:
        caps[("ip2p-realesrgan", s)] = 1
        caps[("ip2p-direct", s)] = 1 if long_side(s) > 1024 else max(repeats, 1)
        if long_side(s) > 2048:
            caps[("ip2p-patchwise", s)] = 2
    return Policy(images=per_size, default_images=images or 3, repeats=repeats, caps=caps)


def quick_policy(sizes: list[str]) -> Policy:
    return Policy(images={s: QUICK_IMAGES for s in sizes}, default_images=QUICK_IMAGES, repeats=1)


def plan_runs(methods: list[str], sizes: list[str], models: str, policy: Policy, *, quality: bool = True,
              time_budget: float | None = None, tile: int | None = None, halo: int | None = None,
              memory_budget: int | None = None, threads: int | None = None) -> list[Run]:
    """All runs, ordered round-robin (image i of every cell before image i+1 of any) so that a
    change in machine load spreads over all methods instead of landing on one."""
    counts = {(m, s): policy.runs_for(m, s) for m in methods for s in sizes}
    images = test_images(max(counts.values(), default=0))
    runs = []
    for i, image in enumerate(images):
        for s in sizes:
            w, h = output_size(s)
            for m in methods:
                if i < counts[(m, s)]:
                    runs.append(Run(m, s, w, h, image, models, quality, time_budget, tile, halo, memory_budget, threads))
    return runs
