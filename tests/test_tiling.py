"""ACPT planner and runner: coverage, 0% output overlap, exactness, seam error vs halo, tile choice."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from pipeline.models import LatentSRUNet
from pipeline.tiling import (
    TileCost, acpt_tiles_per_axis, blend_weights, choose_tile_size, plan_tiles, run_tiled,
)


def _sizes(n: int = 60) -> list[tuple[int, int, int, int, int]]:
    rng = random.Random(0)
    cases = [(270, 480, 64, 8, 4), (135, 240, 64, 8, 4), (64, 64, 64, 8, 4), (65, 130, 32, 4, 1), (7, 300, 16, 2, 1)]
    for _ in range(n):
        align = rng.choice([1, 2, 4, 8])
        tile = align * rng.randint(4, 24)
        halo = align * rng.randint(0, (tile // align - 1) // 2)
        cases.append((rng.randint(1, 400), rng.randint(1, 400), tile, halo, align))
    return cases


@pytest.mark.parametrize("strategy", ["even", "packed"])
def test_acpt_cores_partition_the_image_with_zero_overlap(strategy):
    for h, w, tile, halo, align in _sizes():
        plan = plan_tiles(h, w, tile, halo, align=align, strategy=strategy)
        count = torch.zeros(plan.height, plan.width, dtype=torch.int32)
        for t in plan.tiles:
            r, c = t.rows, t.cols
            count[r.core_start:r.core_stop, c.core_start:c.core_stop] += 1
            for s, length in ((r, plan.height), (c, plan.width)):
                assert 0 <= s.window_start <= s.core_start < s.core_stop <= s.window_stop <= length
                assert s.window_start % align == 0
                if length >= tile:  # static window shape, shifted inward at borders
                    assert s.window_stop - s.window_start == tile
                    # real context of `halo` on every side that is not the image border
                    assert s.core_start == 0 or s.core_start - s.window_start >= plan.halo
                    assert s.core_stop == length or s.window_stop - s.core_stop >= plan.halo
        assert torch.all(count == 1), (h, w, tile, halo, align)
        assert plan.output_overlap == 0.0
        assert plan.grid[0] == acpt_tiles_per_axis(plan.height, tile, plan.halo)


def test_acpt_tile_count_is_minimal():
    """No grid with fewer tiles can satisfy the halo constraint (brute force on one axis)."""
    for length in range(1, 200):
        for tile, halo in ((16, 4), (16, 0), (24, 6), (32, 8)):
            n = acpt_tiles_per_axis(length, tile, halo)
            # capacity of n-1 tiles: two edges of tile-halo plus interiors of tile-2*halo
            if n > 1:
                fewer = n - 1
                capacity = tile if fewer == 1 else 2 * (tile - halo) + (fewer - 2) * (tile - 2 * halo)
                assert capacity < length


def test_naive_and_overlap_plans_cover_everything():
    for h, w, tile, _halo, align in _sizes(30):
        naive = plan_tiles(h, w, tile, mode="naive", align=align)
        assert naive.limit_ratio == pytest.approx(1.0) and naive.output_overlap == 0.0
        overlap = plan_tiles(h, w, tile, mode="overlap", align=align)
        cover = torch.zeros(overlap.height, overlap.width)
        for t in overlap.tiles:
            cover[t.rows.window_start:t.rows.window_stop, t.cols.window_start:t.cols.window_stop] += 1
        assert torch.all(cover >= 1)


def test_overlap_tile_count_matches_the_published_formula():
    # 3840x2160 -> latent 270x480, T=64 with 50% overlap: n = ceil((L - T) / S) + 1 per axis
    plan = plan_tiles(270, 480, 64, mode="overlap")
    assert plan.grid == (8, 14)  # tiling reference table: T=64, O=32 gives 8x14 at 2160p
    assert plan.limit_ratio > 3.0
    acpt = plan_tiles(270, 480, 64, 8, align=4)
    assert acpt.limit_ratio < 2.0 < plan.limit_ratio


def test_limit_ratio_of_a_zero_halo_grid_on_a_divisible_size_is_one():
    assert plan_tiles(256, 384, 64, 0).limit_ratio == 1.0
    assert plan_tiles(256, 384, 64, 0).n_tiles == 4 * 6


class ConvStack(nn.Module):
    """An operator with a known receptive field: `depth` 3x3 convs reach `depth` pixels."""

    def __init__(self, depth: int, scale: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.Sequential(*[nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh()) for _ in range(depth)])
        self.scale = scale

    def forward(self, x):
        y = self.convs(x)
        return nn.functional.interpolate(y, scale_factor=self.scale, mode="nearest") if self.scale > 1 else y


@pytest.mark.parametrize("mode_scale", [1, 4])
def test_acpt_is_exact_for_an_operator_within_the_halo(mode_scale):
    op = ConvStack(depth=5, scale=mode_scale)
    x = torch.randn(1, 3, 77, 131)
    with torch.no_grad():
        full = op(x)
        for strategy in ("even", "packed"):
            plan = plan_tiles(77, 131, 24, 5, strategy=strategy)
            assert plan.n_tiles > 4
            tiled = run_tiled(op, x, plan, scale=mode_scale, batch_size=3)
            assert torch.allclose(tiled, full, atol=1e-6), (strategy, (tiled - full).abs().max())
        # with too small a halo the result is not exact: the test above can fail
        short = run_tiled(op, x, plan_tiles(77, 131, 24, 2), scale=mode_scale)
        assert (short - full).abs().max() > 1e-4


def _sr_unet(channels=(16, 32)) -> LatentSRUNet:
    torch.manual_seed(0)
    unet = LatentSRUNet(block_out_channels=channels).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.08)
    return unet


def test_acpt_is_exact_for_the_sr_unet_when_the_halo_covers_its_receptive_field():
    unet = _sr_unet()
    x = torch.randn(1, 8, 96, 160)
    fn = lambda w: unet(w[:, :4], 999, w[:, 4:])  # noqa: E731
    with torch.no_grad():
        full = fn(x)
        plan = plan_tiles(96, 160, 64, 24, align=unet.downsample_factor)
        assert plan.n_tiles >= 6
        tiled = run_tiled(fn, x, plan)
    assert torch.allclose(tiled, full, rtol=1e-5, atol=1e-5 * full.abs().max().item()), (tiled - full).abs().max()


def test_seam_error_of_the_sr_unet_falls_as_the_halo_grows():
    unet = _sr_unet((32, 64, 64))
    x = torch.randn(1, 8, 128, 192)
    fn = lambda w: unet(w[:, :4], 999, w[:, 4:])  # noqa: E731
    errors = []
    with torch.no_grad():
        full = fn(x)
        for halo in (0, 4, 8, 16, 36):
            mode = "naive" if halo == 0 else "acpt"
            tile = 32 if halo == 0 else 32 + 2 * halo
            tiled = run_tiled(fn, x, plan_tiles(128, 192, tile, halo, mode=mode, align=4))
            errors.append(((tiled - full).abs().mean() / full.abs().mean()).item())  # relative
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-5 < errors[0]  # a halo beyond the receptive field (34 px) is exact


def test_overlap_blending_is_a_partition_of_unity():
    assert torch.all(blend_weights(64) > 0)
    x = torch.full((1, 2, 70, 100), 3.0)
    out = run_tiled(lambda w: w, x, plan_tiles(70, 100, 32, mode="overlap"))
    assert torch.allclose(out, x)


def test_choose_tile_size_respects_the_memory_budget():
    table = [TileCost(32, 0.010, 100), TileCost(64, 0.030, 400), TileCost(128, 0.100, 1600)]
    assert choose_tile_size(270, 480, 8, table).tile == 128            # no budget: fewest x cost
    assert choose_tile_size(270, 480, 8, table, memory_budget=500).tile == 64
    assert choose_tile_size(270, 480, 8, table, memory_budget=100).tile == 32
    with pytest.raises(MemoryError, match="memory budget"):
        choose_tile_size(270, 480, 8, table, memory_budget=10)


def test_planner_rejects_impossible_settings():
    with pytest.raises(ValueError):
        plan_tiles(100, 100, 30, 4, align=4)       # tile not a multiple of align
    with pytest.raises(ValueError):
        plan_tiles(100, 100, 16, 8)                # halo leaves no core
    with pytest.raises(ValueError):
        plan_tiles(100, 100, 16, 2, mode="spiral")


def test_fitted_plan_keeps_acpt_exact_and_the_limit_ratio_low():
    """The window fitted to the resolution: cores still partition the latent (0% output overlap),
    one static window shape, and at 4K (mini: 270x480 latent, halo 8) at most 1.25x the minimum
    pixels, where the best square tile from the set's list evaluates 1.69x."""
    from pipeline.tiling import fit_tile, fitted_plan

    assert fit_tile(480, 4, 8, 4) == 132 and fit_tile(270, 1, 8, 4) == 272
    for (h, w) in ((72, 128), (144, 256), (270, 480), (540, 960)):
        plan = fitted_plan(h, w, 8, max_window=128 * 128, align=4)
        assert plan.output_overlap == 0
        assert len({t.window_shape for t in plan.tiles}) == 1
        shape = plan.tiles[0].window_shape
        assert shape[0] * shape[1] <= 128 * 128
        covered = torch.zeros(plan.height, plan.width, dtype=torch.int32)
        for t in plan.tiles:
            covered[t.rows.core_start : t.rows.core_stop, t.cols.core_start : t.cols.core_stop] += 1
        assert bool((covered == 1).all())
    assert fitted_plan(270, 480, 8, max_window=128 * 128, align=4).limit_ratio <= 1.25
    best_square = min(plan_tiles(272, 480, t, 8, align=4).limit_ratio for t in (32, 64, 96, 128))
    assert best_square > 1.6
    with pytest.raises(MemoryError):
        fitted_plan(270, 480, 8, max_window=16 * 16, align=4)
