"""Every method end to end on a small input, the report's arithmetic, budgets and the offline reload."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import METHODS, edit
from pipeline.model_sets import load_local_set, load_model_set, save_local_set
from pipeline.stages.edit import standard_size, uses_cfg
from pipeline.tiling import plan_tiles


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:90, 0:160]
    arr = np.stack([x * 1.5, y * 2.5, 128 + 60 * np.sin(x / 7.0)], -1) + rng.normal(0, 8, (90, 160, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_returns_the_requested_size(photo, method, tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEPICASSO_CACHE", str(tmp_path))
    # a local edit: every method runs the editor (a global look would take mobilepicasso's look path, a
    # background colour its region colour map: `use_colour_map=False` keeps it on the editor path)
    result = edit(photo, "turn the background blue", method=method, size="288x160", steps=2, seed=1,
                  use_colour_map=False)
    assert not result.report.failed, result.report.failure_reason
    assert result.image.size == (288, 160)
    assert result.image.mode == "RGB"
    report = result.report.to_dict()
    json.dumps(report)  # the report is JSON-serialisable
    assert report["output_size"] == (288, 160) and report["seed"] == 1 and report["steps"] == 2
    assert report["total_seconds"] > 0 and report["peak_memory_bytes"] > 0
    assert report["unet_evaluations"]["edit"] > 0 and report["unet_flops"]["edit"] > 0


def test_size_4k_keeps_the_aspect_ratio(photo):
    # 16:9 input -> 3840x2160; checked on the planner and report without running a 4K edit
    from pipeline.inputs import parse_size

    assert parse_size("4k", photo.size) == (3840, 2160)
    assert parse_size("2048x2048", photo.size) == (2048, 2048)
    assert parse_size("1024", (100, 200)) == (512, 1024)


@pytest.mark.parametrize("text_guidance, image_guidance", [(1.0, 1.0), (3.0, 1.5)])
def test_unet_evaluations_match_the_planner(photo, text_guidance, image_guidance):
    steps = 3
    result = edit(photo, "make it warmer", method="mobilepicasso-paper", size="600x336", steps=steps,
                  text_guidance=text_guidance, image_guidance=image_guidance, tile=32, halo=4)
    models = load_model_set("mini")
    up = models.upscaler
    plan = plan_tiles(*up.condition_size(600, 336), 32, 4, align=up.align)
    passes = 3 if uses_cfg(text_guidance, image_guidance) else 1
    evals = result.report.unet_evaluations
    assert evals["edit"] == steps * passes
    assert evals["upscale"] == plan.n_tiles * models.info.upscaler_steps
    assert result.report.tiling["tiles"] == plan.n_tiles > 1
    assert result.report.tiling["grid"] == list(plan.grid)


def test_tiled_variants_differ_only_in_their_tiles(photo):
    runs = {m: edit(photo, "make it night", method=m, size="1024x576", steps=1, tile=32, halo=4)
            for m in ("mobilepicasso-paper", "tiled-naive", "tiled-overlap")}
    ratios = {m: r.report.tiling["limit_ratio"] for m, r in runs.items()}
    assert ratios["tiled-naive"] == 1.0 < ratios["mobilepicasso-paper"] < ratios["tiled-overlap"]
    assert (runs["mobilepicasso-paper"].report.unet_evaluations["edit"]
            == runs["tiled-overlap"].report.unet_evaluations["edit"])


def test_acpt_with_a_full_halo_matches_the_untiled_upscaler(photo):
    """End to end: ACPT output equals one untiled pass when the halo covers the receptive field."""
    tiled = edit(photo, "make it warmer", method="mobilepicasso-paper", size="1024x576", steps=1, tile=104, halo=36)
    single = edit(photo, "make it warmer", method="mobilepicasso-paper", size="1024x576", steps=1, tile=128, halo=8)
    assert single.report.tiling["tiles"] == 1 and tiled.report.tiling["tiles"] > 1
    a, b = np.asarray(tiled.image, float), np.asarray(single.image, float)
    assert np.abs(a - b).max() <= 1.0  # identical up to 8-bit rounding


def test_direct_editing_over_budget_is_reported_not_raised(photo):
    result = edit(photo, "make it snowy", method="ip2p-direct", size="4k", steps=20, time_budget=5)
    assert result.image is None
    assert result.report.failed and result.report.failure_reason.startswith("over budget")
    assert "TFLOP" in result.report.failure_reason


def test_memory_budget_plans_the_whole_run(photo):
    """The budget covers the SR windows, the decode windows and the full-resolution frame: a tight
    budget shrinks the windows below the defaults, and an impossible one is one clear sentence."""
    roomy = edit(photo, "make it snowy", method="mobilepicasso-paper", size="1024x576", steps=1, memory_budget=2**40)
    tight = edit(photo, "make it snowy", method="mobilepicasso-paper", size="1024x576", steps=1,
                 memory_budget=120 * 2**20)
    info = load_model_set("mini").info
    assert roomy.report.memory_plan["sr_window"] == max(info.tile_sizes) ** 2
    plan = tight.report.memory_plan
    assert plan["frame_bytes"] == 3 * 1024 * 576 * 7 and plan["estimated_bytes"] <= 120 * 2**20
    assert plan["decode_window"] < roomy.report.memory_plan["decode_window"]
    assert not tight.report.failed and tight.image.size == (1024, 576)
    refused = edit(photo, "make it snowy", method="mobilepicasso-paper", size="4k", steps=1, memory_budget=2**20)
    assert refused.image is None and refused.report.failure_reason.startswith("over budget")
    assert "working memory" in refused.report.failure_reason


def test_standard_size_rounds_to_the_model_multiple():
    assert standard_size(1920, 1080, 128, 32) == (128, 64)
    assert standard_size(1080, 1920, 512, 64) == (256, 512)
    assert standard_size(10, 4000, 128, 32) == (32, 128)


def test_a_saved_set_reloads_offline_with_every_component(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from pipeline.mini_architecture import build_untrained
    from pipeline.model_sets import BUNDLED, SetInfo

    components = build_untrained(BUNDLED / "mini" / "tokenizer", seed=3)
    save_local_set(components, SetInfo(name="probe", description="test set"), tmp_path / "set")
    models = load_local_set(tmp_path / "set")
    assert models.info.trained and models.info.untrained == ()
    for name in ("unet", "vae", "text_encoder"):
        saved = getattr(models.edit_pipeline, name).state_dict()
        for key, value in components[name].state_dict().items():
            assert torch.equal(saved[key], value), (name, key)
    assert torch.equal(models.projector.state_dict()["mix.weight"], components["projector"].state_dict()["mix.weight"])

    save_local_set(components, SetInfo(name="cfg", description="configs only"), tmp_path / "cfg", weights=False)
    untrained = load_local_set(tmp_path / "cfg")
    assert not untrained.info.trained and "unet" in untrained.info.untrained
    assert "UNTRAINED" in untrained.info.label
