"""mobilepicasso edits only the named region: compositing, colour transfer, sparse tiles, empty regions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from pipeline import edit, synthedit
from pipeline.bench.metrics import psnr
from pipeline.model_sets import load_model_set
from pipeline.stages.compose import colour_support, compose, decide_origins, guided_upsample, luma
from pipeline.stages.edit import KeepOutside, edit_latent, source_latent
from pipeline.stages.fill import fill_from_surround, push_pull, removal_alpha
from pipeline.stages.region import diffedit_region
from pipeline.stages.transfer import fit_affine_colour
from pipeline.tiling import plan_tiles, restrict_to, run_tiled


def _photo(w: int, h: int) -> np.ndarray:
    import skimage.data

    return np.asarray(Image.fromarray(skimage.data.astronaut()).resize((w, h), Image.Resampling.BICUBIC))


def test_pixels_outside_a_zero_region_are_the_source_bytes():
    source = _photo(400, 300)
    region = np.zeros((300, 400), np.float32)
    region[100:200, 250:350] = np.linspace(0.2, 1.0, 100, dtype=np.float32)[None]
    inside = np.random.default_rng(0).random((300, 400, 3), dtype=np.float32)
    out = compose(source, region, inside)
    assert np.array_equal(out[region == 0], source[region == 0])
    assert (out[region == 1] != source[region == 1]).any()


def test_guided_upsampling_is_exactly_zero_away_from_the_region():
    small = np.zeros((32, 32), np.float32)
    small[10:20, 10:20] = 1
    source = _photo(512, 512).astype(np.float32) / 255
    guide_small = luma(np.asarray(Image.fromarray((source * 255).astype(np.uint8)).resize((32, 32)), np.float32) / 255)
    up = guided_upsample(small, guide_small, luma(source))
    assert up.shape == (512, 512)
    assert (up[:80] == 0).all() and (up[:, :80] == 0).all() and (up[400:] == 0).all()
    assert up[200:260, 200:260].min() > 0.9


def test_a_known_colour_map_at_the_edit_size_is_reproduced_at_4k_within_one_level():
    full = _photo(3840, 2160).astype(np.float32) / 255
    a = torch.tensor([[0.299, 0.587, 0.114], [0.2, 0.6, 0.1], [0.1, 0.3, 0.5]])
    b = torch.tensor([0.0, 0.02, 0.05])

    def look(x: torch.Tensor) -> torch.Tensor:  # stays inside [0, 1]: an exact affine map
        return torch.einsum("oi,bihw->bohw", a, x) + b[None, :, None, None]

    small = F.interpolate(torch.from_numpy(full).permute(2, 0, 1)[None], size=(72, 128), mode="area")
    out = fit_affine_colour(small, look(small)).apply(full)
    truth = look(torch.from_numpy(full).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(out - truth).max() * 255 <= 1.0


def test_origins_split_colour_changes_from_new_structure():
    region = torch.zeros(1, 1, 32, 32)
    region[..., 4:28, 4:28] = 1
    residual = torch.zeros(1, 1, 32, 32)
    residual[..., 10:14, 10:14] = 0.5  # something new drawn here
    origins = decide_origins(region, residual, residual_threshold=0.08, grow=1)
    assert origins.generative[11, 11] == 1 and origins.generative[24, 24] == 0
    assert origins.region[24, 24] == 1 and origins.region[0, 0] == 0
    shares = origins.shares()
    assert shares["source"] + shares["transfer"] + shares["generative"] == pytest.approx(1.0, abs=1e-3)


def test_sparse_plan_cores_cover_the_region_and_untouched_tiles_cost_no_call():
    plan = plan_tiles(120, 200, 32, 4, mode="acpt")
    need = torch.zeros(120, 200, dtype=torch.bool)
    need[50:60, 10:20] = True
    need[100:110, 180:190] = True
    sparse = restrict_to(plan, need)
    assert 0 < sparse.n_tiles < plan.n_tiles and sparse.skipped == plan.n_tiles - sparse.n_tiles
    covered = torch.zeros_like(need)
    for t in sparse.tiles:
        covered[t.rows.core_start:t.rows.core_stop, t.cols.core_start:t.cols.core_stop] = True
    assert covered[need].all()
    calls = []

    def fn(windows):
        calls.append(windows.shape[0])
        return windows * 2

    x = torch.randn(1, 3, 120, 200)
    dense = run_tiled(fn, x, plan, batch_size=1)
    calls.clear()
    out = run_tiled(fn, x, sparse, batch_size=1)
    assert sum(calls) == sparse.n_tiles
    assert torch.equal(out[..., covered], dense[..., covered])  # a kept core is what the dense plan writes


def test_keep_outside_everywhere_returns_the_source_latent():
    models = load_model_set("mini")
    pipe = models.edit_pipeline
    image = Image.fromarray(_photo(128, 128))
    z = source_latent(pipe, image, (128, 128))
    keep = KeepOutside(torch.zeros(1, 1, 16, 16), z, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = edit_latent(pipe, image, "make it night", size=(128, 128), steps=3, text_guidance=1.5,
                          image_guidance=1.6, generator=torch.Generator().manual_seed(0), keep_outside=keep)
    assert torch.equal(out, z)


def test_diffedit_region_for_sets_without_a_region_model():
    models = load_model_set("mini")
    image = Image.fromarray(_photo(128, 96))
    m = diffedit_region(models.edit_pipeline, image, "make it night", (128, 96), generator=torch.Generator().manual_seed(0),
                        draws=2)
    assert m.shape == (1, 1, 96, 128) and 0.0 <= float(m.min()) < 0.1 and 0.9 < float(m.max()) <= 1.0


def test_an_instruction_naming_nothing_in_the_image_returns_the_source_unchanged():
    ex = synthedit.sample(synthedit.split_seeds("test", 1)[0])
    source = ex.source(*ex.size(320))
    result = edit(source, "remove the dog", size=source.size)
    assert np.array_equal(np.asarray(result.image), np.asarray(source))
    assert "names nothing" in result.report.note
    assert result.report.region["source"] == 1.0


def test_mobilepicasso_keeps_the_source_outside_the_edit():
    ex = next(e for e in map(synthedit.sample, synthedit.split_seeds("test", 40)) if e.family == "recolour")
    w, h = ex.size(384)
    source = ex.source(w, h)
    result = edit(source, ex.instruction, size=(w, h))
    same = (np.asarray(result.image) == np.asarray(source)).all(axis=2)
    outside = ~ex.edit_mask(w, h)
    assert same[outside].mean() > 0.9  # the source's own bytes, not a re-rendering of them
    assert result.report.region["source"] > 0.5



def test_a_resized_window_equals_the_window_of_the_resized_frame():
    from pipeline.stages.transfer import resize_crop

    plane = np.random.default_rng(1).random((18, 32), dtype=np.float32)
    full = resize_crop(plane, (960, 540))
    box = (101, 37, 613, 500)
    np.testing.assert_allclose(resize_crop(plane, (960, 540), box), full[37:500, 101:613], atol=1e-5)


def test_sparse_decode_equals_the_dense_decode_where_needed():
    from pipeline.stages.upscale import decode_tiled

    vae = load_model_set("mini").vae
    z = torch.randn(1, 4, 40, 72, generator=torch.Generator().manual_seed(0))
    need = torch.zeros(40, 72, dtype=torch.bool)
    need[12:20, 30:41] = True
    with torch.no_grad():
        dense = decode_tiled(vae, z, factor=8, max_window=48 * 48, halo=16)
        sparse = decode_tiled(vae, z, factor=8, max_window=48 * 48, halo=16, need=need)
    rows, cols = slice(12 * 8, 20 * 8), slice(30 * 8, 41 * 8)
    torch.testing.assert_close(sparse[..., rows, cols], dense[..., rows, cols], atol=1e-5, rtol=0)
    assert (sparse[..., :, : 8 * 14] == 0).all()  # beyond the halo around the region nothing was decoded


def test_a_look_is_one_colour_map_of_the_full_resolution_source_within_one_level():
    from pipeline.models.look import LookPrediction
    from pipeline.stages.look import apply_look

    source = _photo(3840, 2160)
    look = LookPrediction(torch.ones(1), torch.tensor([[[0.3, 0.0, 0.0], [0.0, 0.36, 0.0], [0.05, 0.0, 0.55]]]),
                          torch.tensor([[5 / 255, 8 / 255, 22 / 255]]))
    out = apply_look(look, source)
    truth = look.apply(torch.from_numpy(source / 255.0).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    assert out.dtype == np.uint8 and out.shape == source.shape
    assert np.abs(out.astype(np.float32) - np.clip(truth * 255, 0, 255)).max() <= 1.0


def test_use_look_false_sends_a_look_to_the_region_path_and_then_the_editor():
    ex = next(e for e in map(synthedit.sample, synthedit.split_seeds("test", 50)) if e.family == "global")
    src = ex.source(*ex.size(256))
    looked = edit(src, "make it night", size=src.size, models="mini")
    mapped = edit(src, "make it night", size=src.size, models="mini", use_look=False)
    edited = edit(src, "make it night", size=src.size, models="mini", use_look=False, use_colour_map=False)
    assert looked.report.note.startswith("a global look") and "edit" not in looked.report.stage_seconds
    assert mapped.report.note.startswith("the region is one colour map") and mapped.report.region["source"] < 0.05
    assert not (edited.report.note or "").startswith(("a global look", "the region")) and "edit" in edited.report.stage_seconds


def test_a_recolour_is_the_region_colour_map_without_the_editor():
    ex = next(e for e in map(synthedit.sample, synthedit.split_seeds("test", 50)) if e.family == "recolour")
    w, h = ex.size(512)
    src = ex.source(w, h)
    mapped = edit(src, ex.instruction, size=(w, h), models="mini")
    edited = edit(src, ex.instruction, size=(w, h), models="mini", use_colour_map=False)
    assert mapped.report.note.startswith("the region is one colour map") and "edit" not in mapped.report.stage_seconds
    assert "edit" in edited.report.stage_seconds and not (edited.report.note or "").startswith("the region")
    near = ndimage.binary_dilation(ex.edit_mask(w, h), iterations=12)
    same = (np.asarray(mapped.image) == np.asarray(src)).all(-1)
    assert same[~near].mean() > 0.99  # the source's bytes away from the named shape


def test_a_removal_is_filled_from_its_surround_without_the_editor():
    ex = next(e for e in map(synthedit.sample, synthedit.split_seeds("test", 50)) if e.family == "remove")
    w, h = ex.size(256)
    src = ex.source(w, h)
    filled = edit(src, ex.instruction, size=(w, h), models="mini")
    edited = edit(src, ex.instruction, size=(w, h), models="mini", use_fill=False)
    assert filled.report.note.startswith("a removal") and "edit" not in filled.report.stage_seconds
    assert "edit" in edited.report.stage_seconds and not (edited.report.note or "").startswith(("a removal", "the region"))
    mask, target = ex.edit_mask(w, h), np.asarray(ex.target(w, h))
    assert psnr(np.asarray(filled.image)[mask], target[mask]) > psnr(np.asarray(src)[mask], target[mask]) + 3


def test_a_fill_continues_the_surround_and_not_a_shape_touching_the_hole():
    crop = np.empty((120, 160, 3), np.float32)
    crop[:] = (0.35, 0.2, 0.5)                      # the background
    yy, xx = np.mgrid[:120, :160]
    disk = (yy - 70) ** 2 + (xx - 80) ** 2 < 30 ** 2
    crop[disk] = (0.85, 0.15, 0.15)                  # the thing removed
    crop[20:50, 60:100] = (0.95, 0.85, 0.1)          # a shape on top of it, touching the hole
    hole = disk & ~((yy >= 20) & (yy < 50) & (xx >= 60) & (xx < 100))
    out = fill_from_surround(crop, hole.astype(np.float32), ring=4)
    assert np.abs(out[hole] - (0.35, 0.2, 0.5)).max() < 0.02  # the background, not yellow or red
    assert (out[~hole] == crop[~hole]).all()


def test_push_pull_keeps_known_pixels_and_fills_a_gradient_between_them():
    x = np.linspace(0, 1, 64, dtype=np.float32)
    colours = np.repeat(np.stack([x, 1 - x, 0.5 + 0 * x], -1)[None], 48, 0)
    known = np.ones((48, 64), np.float32)
    known[10:38, 20:44] = 0
    out = push_pull(colours * known[..., None], known)
    assert np.abs(out[known > 0] - colours[known > 0]).max() < 1e-5
    assert np.abs(out[24, 20:44, 0] - x[20:44]).max() < 0.15  # the hole follows the gradient around it


def test_a_removed_things_rim_is_inside_its_fill_weight():
    region = np.zeros((40, 40), np.float32)
    region[10:30, 10:30] = 1
    region[9, 10:30] = 0.3  # the anti-aliased rim
    alpha = removal_alpha(region, edge=2)
    assert alpha[9, 15] == 1 and alpha[7, 15] == 1 and alpha[5, 15] == 0


def test_colour_support_keeps_to_the_named_things_colours():
    rng = np.random.default_rng(0)
    small = np.empty((32, 32, 3), np.float32)
    small[:] = (0.15, 0.5, 0.5) + rng.normal(0, 0.03, (32, 32, 3))  # a textured teal background
    small[:, 12:] = (0.86, 0.16, 0.16)  # a flat red shape; the core spilled onto the background (3/8 of it)
    crop = np.repeat(np.repeat(small, 8, 0), 8, 1)
    shape = colour_support(np.ones((32, 32), bool), small, crop)
    assert shape[:, 100:].min() == 1 and shape[:, :90].max() == 0
    background = colour_support(np.arange(32)[None].repeat(32, 0) < 12, small, crop.copy())
    striped = crop.copy()
    striped[40:44, :90] = 0.96  # a thin white stripe, invisible at the core's size
    background_striped = colour_support(np.arange(32)[None].repeat(32, 0) < 12, small, striped)
    assert background[:, :90].mean() > 0.98 and background[:, 100:].max() == 0
    assert background_striped[40:44, :90].max() == 0
