"""How long each method is expected to take, said before Run.

Three sources, best first:
- runs of this app: the latest measured time per method, scaled by output pixels;
- the benchmark's cost tables (`results/bench*/cost.csv`, one folder per main-suite run: measured
  medians per method and size, and the derived cost where a baseline was not run), interpolated in
  output pixels, used only when the benchmark ran the loaded model set;
- `ip2p-direct`: `estimate_direct_edit` (exact FLOPs x this machine's measured U-Net throughput), the
  estimate the method itself uses to refuse a run over its time budget.

A method none of them knows (a new one, or a model set that was never benchmarked) has no estimate
until it has run once here; the tab says so instead of guessing.
"""
from __future__ import annotations

import csv
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
SLOW_SECONDS = 60.0   # flagged before Run


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    source: str           # "measured here", "benchmark", "FLOPs", "none"

    @property
    def slow(self) -> bool:
        return self.seconds is not None and self.seconds > SLOW_SECONDS


def duration(seconds: float | None) -> str:
    """'<1 s', '~4 s', '~2 min', '~5.8 h'."""
    if seconds is None or not math.isfinite(seconds):
        return "no estimate yet"
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def read_bench(folder: Path = RESULTS_DIR, models: str = "mini") -> dict[str, list[tuple[int, float]]]:
    """method -> [(output pixels, seconds)] from every main-suite cost table under `folder` that ran
    `models` (a run stopped early, e.g. at 4K, leaves gaps another run's sizes fill)."""
    table: dict[str, dict[int, float]] = {}
    for run in sorted(folder.glob("bench*")):
        try:
            meta = json.loads((run / "meta.json").read_text())
            rows = list(csv.DictReader((run / "cost.csv").open()))
        except (OSError, ValueError):
            continue
        if str(meta.get("models", meta.get("model_set", models))) != models:
            continue
        for row in rows:
            seconds = _float(row.get("seconds_median")) or _float(row.get("derived_seconds"))
            w, h = _float(row.get("width")), _float(row.get("height"))
            if seconds and w and h:
                table.setdefault(row["method"], {})[int(w * h)] = seconds
    return {m: sorted(points.items()) for m, points in table.items()}


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def interpolate(points: list[tuple[int, float]], pixels: int) -> float:
    """Piecewise linear in output pixels; beyond the table, the nearest segment's slope (never
    below a quarter of the nearest measured time: a method has a fixed part)."""
    if len(points) == 1:
        (p0, s0), = points
        return max(s0 * pixels / p0, s0 / 4)
    for (p0, s0), (p1, s1) in zip(points, points[1:]):
        if pixels <= p1 or (p1, s1) == points[-1]:
            if pixels < points[0][0]:
                (p0, s0), (p1, s1) = points[0], points[1]
            value = s0 + (s1 - s0) * (pixels - p0) / (p1 - p0)
            nearest = s0 if abs(pixels - p0) <= abs(pixels - p1) else s1
            return max(value, nearest / 4)
    raise AssertionError("unreachable")


class CostModel:
    """Estimates per (method, output size); `observe` records what a run here actually took."""

    def __init__(self, models: str, bench: dict[str, list[tuple[int, float]]] | None = None,
                 direct=None):
        self.models = models
        self.bench = read_bench(models=models) if bench is None else bench
        self.direct = direct          # callable (w, h) -> seconds, or None
        self.observed: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def observe(self, method: str, size: tuple[int, int], seconds: float) -> None:
        with self._lock:
            self.observed[method] = (size[0] * size[1], float(seconds))

    def estimate(self, method: str, size: tuple[int, int]) -> Estimate:
        pixels = size[0] * size[1]
        with self._lock:
            seen = self.observed.get(method)
        if method == "ip2p-direct" and self.direct is not None:
            try:
                return Estimate(float(self.direct(size)), "FLOPs")
            except Exception:  # an estimate must never break the page
                pass
        if seen is not None:
            p0, s0 = seen
            return Estimate(max(s0 * pixels / p0, s0 / 4) if p0 != pixels else s0, "measured here")
        if method in self.bench:
            return Estimate(interpolate(self.bench[method], pixels), "benchmark")
        return Estimate(None, "none")

    def total(self, methods, size: tuple[int, int]) -> float | None:
        values = [self.estimate(m, size).seconds for m in methods]
        return None if any(v is None for v in values) else sum(values)
