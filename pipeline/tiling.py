"""Tile planning and tiled execution: ACPT and the two tiled baselines.

Adaptive context-preserving tiling (ACPT): every tile's *input window* is its core plus `halo`
latent pixels of real neighbouring context; only the core is written to the output, so cores
partition the image (0% output overlap). At image borders the window shifts inward instead of
being padded, so every window has the same static shape (what an NPU graph compiles for). The
grid adapts to the size: the fewest tiles per axis that keep every core inside its window's
halo, spread evenly (or packed from the top-left with an uneven last core), and the tile size is
chosen from a measured per-tile cost table under an optional memory budget.

Baselines share the same runner: `naive` (cores with no context) and `overlap` (50%-overlapping
windows blended with strictly positive weights, MultiDiffusion / Mixture-of-Diffusers style).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

MODES = ("acpt", "naive", "overlap")
STRATEGIES = ("even", "packed")


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the input window and the core it writes (half-open, latent px)."""

    window_start: int
    window_stop: int
    core_start: int
    core_stop: int


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span

    @property
    def window_shape(self) -> tuple[int, int]:
        return (self.rows.window_stop - self.rows.window_start, self.cols.window_stop - self.cols.window_start)


@dataclass(frozen=True)
class TilePlan:
    mode: str
    height: int  # latent size the plan covers (already padded to `align`)
    width: int
    tile: int | tuple[int, int]  # the static window: square, or (rows, cols) when fitted to the resolution
    halo: int
    align: int
    strategy: str
    grid: tuple[int, int]
    tiles: tuple[Tile, ...]
    skipped: int = 0  # tiles of the full grid left out by `restrict_to` (sparse ACPT)

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)

    @property
    def evaluated_pixels(self) -> int:
        """Latent pixels the model evaluates: sum of window areas."""
        return sum(h * w for h, w in (t.window_shape for t in self.tiles))

    @property
    def limit_ratio(self) -> float:
        """Evaluated pixels over the minimum possible (one pass over the latent, no overlap)."""
        return self.evaluated_pixels / (self.height * self.width)

    @property
    def output_overlap(self) -> float:
        """Share of output pixels written by more than one tile (0 for ACPT and naive tiling)."""
        written = sum((t.rows.core_stop - t.rows.core_start) * (t.cols.core_stop - t.cols.core_start) for t in self.tiles)
        return written / (self.height * self.width) - 1.0

    def describe(self) -> dict:
        return {
            "mode": self.mode, "tile": self.tile if isinstance(self.tile, int) else list(self.tile), "halo": self.halo, "grid": list(self.grid),
            "tiles": self.n_tiles, "skipped": self.skipped, "strategy": self.strategy,
            "limit_ratio": round(self.limit_ratio, 4),
        }


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def acpt_tiles_per_axis(length: int, tile: int, halo: int) -> int:
    """Fewest ACPT tiles covering `length`: edge cores hold up to tile-halo, interior cores tile-2*halo."""
    if length <= tile:
        return 1
    edge, interior = tile - halo, tile - 2 * halo
    if length <= 2 * edge:
        return 2
    return 2 + math.ceil((length - 2 * edge) / interior)


def _acpt_axis(length: int, tile: int, halo: int, align: int, strategy: str) -> list[Span]:
    if length <= tile:
        return [Span(0, length, 0, length)]
    n = acpt_tiles_per_axis(length, tile, halo)
    units, h, t = length // align, halo // align, tile // align
    if strategy == "packed":
        bounds = [0] + [min(t - h + i * (t - 2 * h), units) for i in range(n - 1)] + [units]
        # the remainder lands in the last core, which must still fit its (inward-shifted) window
        bounds[-2] = max(bounds[-2], units - (t - h))
    elif strategy == "even":
        # edge cores get `halo` more room than interior ones: sizes s+h, s, ..., s, s+h
        interior = units - 2 * h
        cuts = [round(i * interior / n) for i in range(n + 1)]
        sizes = [cuts[i + 1] - cuts[i] for i in range(n)]
        sizes[0] += h
        sizes[-1] += h
        bounds = [0]
        for s in sizes:
            bounds.append(bounds[-1] + s)
    else:
        raise ValueError(f"unknown tiling strategy {strategy!r}; choose from {STRATEGIES}")
    spans = []
    for b, e in zip(bounds[:-1], bounds[1:]):
        start = min(max(b - h, 0), units - t)
        spans.append(Span(start * align, (start + t) * align, b * align, e * align))
    return spans


def _naive_axis(length: int, tile: int, align: int) -> list[Span]:
    n = math.ceil(length / tile)
    units = length // align
    cuts = [round(i * units / n) * align for i in range(n + 1)]
    return [Span(b, e, b, e) for b, e in zip(cuts[:-1], cuts[1:])]


def _overlap_axis(length: int, tile: int, align: int) -> list[Span]:
    if length <= tile:
        return [Span(0, length, 0, length)]
    stride = tile // 2
    n = math.ceil((length - tile) / stride) + 1
    starts = [round(i * (length - tile) / (n - 1) / align) * align for i in range(n)]
    return [Span(s, s + tile, s, s + tile) for s in starts]


def plan_tiles(
    height: int,
    width: int,
    tile: int | tuple[int, int],
    halo: int = 0,
    *,
    mode: str = "acpt",
    align: int = 1,
    strategy: str = "even",
) -> TilePlan:
    """Plan tiles over a latent of `height` x `width` (padded up to a multiple of `align`).

    `tile` is the model's static window size, square or (rows, cols), and must be a multiple of
    `align` (the model's downsampling factor, so tiled and untiled pooling grids coincide); the halo
    is rounded up to a multiple of `align`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown tiling mode {mode!r}; choose from {MODES}")
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    for t in (th, tw):
        if t <= 0 or t % align:
            raise ValueError(f"tile size {t} must be a positive multiple of {align}")
    halo = _round_up(max(halo, 0), align) if mode == "acpt" else 0
    height, width = _round_up(height, align), _round_up(width, align)
    for t, length in ((th, height), (tw, width)):
        if mode == "acpt" and t < length and t - 2 * halo < align:  # one window spanning the axis needs no core margin
            raise ValueError(f"halo {halo} leaves no core in a {t}-pixel tile")
    if mode == "acpt":
        rows, cols = _acpt_axis(height, th, halo, align, strategy), _acpt_axis(width, tw, halo, align, strategy)
    elif mode == "naive":
        rows, cols = _naive_axis(height, th, align), _naive_axis(width, tw, align)
    else:
        rows, cols = _overlap_axis(height, th, align), _overlap_axis(width, tw, align)
    tiles = tuple(Tile(r, c) for r in rows for c in cols)
    return TilePlan(mode, height, width, tile, halo, align, strategy, (len(rows), len(cols)), tiles)


def restrict_to(plan: TilePlan, need: torch.Tensor) -> TilePlan:
    """Sparse ACPT: keep only the tiles whose *cores* hold a pixel of `need` ((H, W) bool over the
    plan's latent grid, or smaller: it is padded with False). Each kept tile keeps its window and
    halo, so every core it writes is exactly what the dense plan writes there; the others cost no
    model call at all."""
    need = need.bool()
    if need.shape != (plan.height, plan.width):
        need = F.pad(need, (0, plan.width - need.shape[1], 0, plan.height - need.shape[0]))
    kept = tuple(
        t for t in plan.tiles
        if need[t.rows.core_start : t.rows.core_stop, t.cols.core_start : t.cols.core_stop].any()
    )
    return replace(plan, tiles=kept, skipped=plan.skipped + plan.n_tiles - len(kept))


def fit_tile(length: int, n: int, halo: int, align: int = 1) -> int:
    """The smallest window for which `n` ACPT tiles cover `length`: n*tile - 2*(n-1)*halo >= length
    (edge cores hold tile - halo, interior ones tile - 2*halo), rounded up to `align`."""
    return _round_up(length if n == 1 else math.ceil((length + 2 * (n - 1) * halo) / n), align)


def fitted_plan(
    height: int, width: int, halo: int, *, max_window: int, align: int = 1, tile_overhead: float = 0.0,
) -> TilePlan:
    """ACPT with the static window fitted to this resolution (the "grid adapted to the resolution").

    For every grid of n_rows x n_cols tiles the window is the smallest (rows, cols) that covers the
    latent; among windows of at most `max_window` latent pixels (the memory a window may take) the
    grid minimising the modelled cost n_tiles * (window pixels + `tile_overhead`) wins, where
    `tile_overhead` is the measured fixed cost of a model call in pixel-equivalents. A square window
    from a fixed list rounds the tile count up and evaluates up to 1.9x the latent at 4K; a fitted
    one stays near 1 + 2 * halo * (n - 1) / length per axis."""
    h, w = _round_up(height, align), _round_up(width, align)
    halo = _round_up(max(halo, 0), align)
    best: tuple[float, int, int] | None = None
    for n_rows in range(1, h // align + 1):
        th = fit_tile(h, n_rows, halo, align)
        if n_rows > 1 and th - 2 * halo < align:
            break
        for n_cols in range(1, w // align + 1):
            tw = fit_tile(w, n_cols, halo, align)
            if n_cols > 1 and tw - 2 * halo < align:
                break
            if th * tw > max_window:
                continue
            cost = n_rows * n_cols * (th * tw + tile_overhead)
            if best is None or cost < best[0]:
                best = (cost, th, tw)
            break  # more columns only cost more once the window fits
    if best is None:
        raise MemoryError(f"no ACPT window of at most {max_window} latent px has a core left with halo {halo}")
    return plan_tiles(h, w, (best[1], best[2]), halo, mode="acpt", align=align)


@dataclass(frozen=True)
class TileCost:
    """One row of the measured per-tile cost table (the paper's Figure 1 b/c)."""

    tile: int
    seconds: float
    peak_bytes: int


def choose_tile_size(
    height: int,
    width: int,
    halo: int,
    table: Sequence[TileCost],
    *,
    align: int = 1,
    memory_budget: int | None = None,
) -> TileCost:
    """The tile size minimising tiles x per-tile latency among those within the memory budget."""
    fitting = [row for row in table if memory_budget is None or row.peak_bytes <= memory_budget]
    fitting = [row for row in fitting if row.tile - 2 * _round_up(halo, align) >= align]
    if not fitting:
        smallest = min(table, key=lambda r: r.peak_bytes)
        raise MemoryError(
            f"no tile size fits the memory budget of {memory_budget / 2**20:.0f} MiB "
            f"(smallest: {smallest.tile} px needs {smallest.peak_bytes / 2**20:.0f} MiB)"
        )

    def total(row: TileCost) -> float:
        h, w = _round_up(height, align), _round_up(width, align)
        halo_a = _round_up(halo, align)
        return acpt_tiles_per_axis(h, row.tile, halo_a) * acpt_tiles_per_axis(w, row.tile, halo_a) * row.seconds

    return min(fitting, key=total)


def blend_weights(length: int) -> torch.Tensor:
    """Strictly positive 1-D window weights (half-sample-offset sine), so border pixels never divide by ~0."""
    u = (torch.arange(length, dtype=torch.float32) + 0.5) / length
    return torch.sin(math.pi * u)


def _batches(tiles: Iterable[Tile], batch_size: int) -> list[list[Tile]]:
    by_shape: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        by_shape.setdefault(t.window_shape, []).append(t)
    return [group[i : i + batch_size] for group in by_shape.values() for i in range(0, len(group), batch_size)]


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    plan: TilePlan,
    *,
    scale: int = 1,
    batch_size: int = 4,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Apply `fn` to `x` (1, C, H, W) tile by tile as `plan` says; `fn` maps windows to windows x `scale`.

    `x` is padded by edge replication up to the plan's aligned size (only at the bottom/right
    image border, where no real neighbour exists) and the output is cropped back.
    """
    if x.shape[0] != 1:
        raise ValueError("run_tiled takes a single image (batch of 1)")
    if not plan.tiles:
        raise ValueError("the plan has no tiles (a sparse plan over an empty region)")
    h0, w0 = x.shape[-2:]
    ph, pw = plan.height - h0, plan.width - w0
    if ph < 0 or pw < 0:
        raise ValueError(f"plan covers {plan.height}x{plan.width}, input is {h0}x{w0}")
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    done = 0
    for batch in _batches(plan.tiles, batch_size):
        windows = torch.cat(
            [x[..., t.rows.window_start : t.rows.window_stop, t.cols.window_start : t.cols.window_stop] for t in batch]
        )
        y = fn(windows)
        if out is None:
            out = y.new_zeros((1, y.shape[1], plan.height * scale, plan.width * scale))
            if plan.mode == "overlap":
                weight = y.new_zeros((1, 1, plan.height * scale, plan.width * scale))
        for i, t in enumerate(batch):
            r0, c0 = t.rows.window_start, t.cols.window_start
            if plan.mode == "overlap":
                wh, ww = t.window_shape
                w = (blend_weights(wh * scale)[:, None] * blend_weights(ww * scale)[None, :]).to(y)
                rows = slice(r0 * scale, (r0 + wh) * scale)
                cols = slice(c0 * scale, (c0 + ww) * scale)
                out[..., rows, cols] += y[i : i + 1] * w
                weight[..., rows, cols] += w
            else:
                rc = slice((t.rows.core_start - r0) * scale, (t.rows.core_stop - r0) * scale)
                cc = slice((t.cols.core_start - c0) * scale, (t.cols.core_stop - c0) * scale)
                out[..., t.rows.core_start * scale : t.rows.core_stop * scale,
                    t.cols.core_start * scale : t.cols.core_stop * scale] = y[i : i + 1, :, rc, cc]
        done += len(batch)
        if on_tile is not None:
            on_tile(done, plan.n_tiles)
    assert out is not None
    if weight is not None:
        out = out / weight
    return out[..., : h0 * scale, : w0 * scale]
