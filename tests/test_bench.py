"""The benchmark's arithmetic: evaluation counts, limit ratios, seam metric, bootstrap, tables."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.bench import metrics, tables
from pipeline.bench.runs import full_policy, output_size, plan_runs, quick_policy, bench_images
from pipeline.tiling import plan_tiles

# ------------------------------------------------------------------------------ limit ratio


@pytest.mark.parametrize("mode,halo", [("naive", 0), ("acpt", 0)])
def test_zero_overlap_grid_on_divisible_size_has_limit_ratio_one(mode, halo):
    plan = plan_tiles(128, 256, 64, halo, mode=mode, align=4)
    assert plan.grid == (2, 4)
    assert plan.limit_ratio == 1.0
    assert plan.output_overlap == 0.0


def test_overlap_and_halo_cost_more_than_the_limit():
    overlap = plan_tiles(270, 480, 64, mode="overlap", align=4)
    acpt = plan_tiles(270, 480, 64, 8, mode="acpt", align=4)
    # tiling.md C.0: 50% overlap at 64 px over a 270x480 latent -> 8 x 14 tiles, ~3.54x the limit
    assert overlap.grid == (8, 14)
    assert overlap.limit_ratio == pytest.approx(8 * 14 * 64 * 64 / (272 * 480))
    assert 1.0 < acpt.limit_ratio < overlap.limit_ratio


# ---------------------------------------------------------------------------- U-Net counts


@pytest.fixture(autouse=True)
def one_thread():
    """As the benchmark's workers run: two OpenMP threads on a busy 2-core machine are much slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_method(method: str, size: tuple[int, int], steps: int = 2):
    from pipeline import edit
    from pipeline.bench.worker import expected_unet_evaluations, tiled_plan
    from pipeline.model_sets import load_model_set

    image = Image.fromarray((np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8))
    report = edit(image, "make it snowy", method=method, size=size, steps=steps, tile=64).report
    models = load_model_set("mini")
    plan = tiled_plan(method, models, *size, report.tiling)
    return report, expected_unet_evaluations(method, models, report, plan), plan


def _per_step() -> int:
    """U-Net evaluations per edit step on the mini set: 3 with dual classifier-free guidance, else 1."""
    from pipeline.model_sets import load_model_set
    from pipeline.stages.edit import uses_cfg

    info = load_model_set("mini").info
    return 3 if uses_cfg(info.text_guidance, info.image_guidance) else 1


@pytest.mark.parametrize("method", ["mobilepicasso-paper", "tiled-overlap", "tiled-naive"])
def test_unet_evaluations_equal_the_planner_formula(method):
    report, expected, plan = _run_method(method, (768, 432))
    assert plan.n_tiles == report.tiling["tiles"] >= 2
    assert report.unet_evaluations == expected
    assert expected["upscale"] == plan.n_tiles * 1  # the mini upscaler is one step
    assert expected["edit"] == 2 * _per_step()  # 2 steps


def test_patchwise_counts_one_edit_per_patch():
    report, expected, _ = _run_method("ip2p-patchwise", (256, 144))
    assert report.tiling["grid"] == [2, 2]
    assert report.unet_evaluations == expected == {"edit": 2 * _per_step() * 4}


# ----------------------------------------------------------------------------------- seams


def _gradient(h: int = 96, w: int = 160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x, 2 * y, x + y], axis=-1)  # integer steps: no quantisation seams
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("period", [1, 8])
def test_seam_metric_is_one_on_a_smooth_image(period):
    s = metrics.seam_visibility(_gradient(), rows=[48], cols=[40, 80, 120], period=period)
    assert s.ratio == pytest.approx(1.0, abs=0.05)
    assert s.lines == 4


def test_seam_metric_compares_like_with_like_positions():
    img = _gradient().astype(np.int16)
    img[:, ::8] += 6  # an 8-px pattern (as a decoder's latent grid leaves), not a seam
    img = np.clip(img, 0, 255).astype(np.uint8)
    assert metrics.seam_visibility(img, rows=[], cols=[40, 80, 120], period=8).ratio == pytest.approx(1.0, abs=0.05)
    assert metrics.seam_visibility(img, rows=[], cols=[40, 80, 120], period=1).ratio > 1.5


def test_seam_metric_sees_an_injected_step_at_a_boundary():
    img = _gradient().astype(np.int16)
    img[:, 80:] += 12  # a tone step exactly where a tile core starts
    s = metrics.seam_visibility(np.clip(img, 0, 255).astype(np.uint8), rows=[48], cols=[40, 80, 120])
    assert s.ratio > 2.0
    off = metrics.seam_visibility(np.clip(img, 0, 255).astype(np.uint8), rows=[48], cols=[30, 60, 100])
    assert off.ratio < s.ratio


def test_seam_lines_follow_the_plan():
    acpt = plan_tiles(54, 96, 64, 8, mode="acpt", align=4)
    assert metrics.seam_lines(acpt, 8, 432, "rows") == []
    cols = metrics.seam_lines(acpt, 8, 768, "cols")
    assert cols == [acpt.tiles[1].cols.core_start * 8]
    overlap = plan_tiles(54, 96, 64, mode="overlap", align=4)
    assert metrics.seam_lines(overlap, 8, 768, "cols") == [32 * 8, 64 * 8]  # window start and stop


# ------------------------------------------------------------------------------- bootstrap


def test_relative_difference_and_its_interval():
    rng = np.random.default_rng(1)
    base = rng.uniform(20, 30, size=40)
    ours = base * 1.1
    d = metrics.relative_difference(ours, base, n_boot=500)
    assert d.estimate == pytest.approx(10.0)
    assert d.low == pytest.approx(10.0) and d.high == pytest.approx(10.0)  # a constant ratio: no spread
    noisy = metrics.relative_difference(base + rng.normal(0, 2, size=40), base, n_boot=500)
    assert noisy.low < noisy.estimate < noisy.high
    fewer = metrics.relative_difference([0.1, 0.2], [0.2, 0.2], n_boot=100)
    assert fewer.estimate == pytest.approx(-25.0)  # "hallucination -25%"


def test_relative_difference_drops_nan_pairs_and_zero_baselines():
    d = metrics.relative_difference([1.0, math.nan, 3.0], [2.0, 2.0, math.nan])
    assert d.n_images == 1 and d.estimate == pytest.approx(-50.0)
    assert math.isnan(metrics.relative_difference([0.1], [0.0]).estimate)


def test_psnr_masks_and_lr_consistency():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[:4] = 110
    mask = np.zeros((8, 8), bool)
    mask[4:] = True
    assert metrics.psnr(a, b, mask) == metrics.PSNR_CAP  # identical where masked: the cap, not infinity
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 50))
    assert metrics.region_mae(a, b, ~mask) == pytest.approx(10.0)
    assert math.isnan(metrics.psnr(a, b, np.zeros((8, 8), bool)))
    small = Image.fromarray(a)
    assert metrics.lr_consistency(small.resize((32, 32), Image.Resampling.NEAREST), small) == metrics.PSNR_CAP


# ---------------------------------------------------------------------------------- tables


def _result(method, size, image, seconds, mib, status="ok", **extra):
    w, h = output_size(size)
    rep = {"total_seconds": seconds, "peak_memory_bytes": mib * 2**20, "stage_seconds": {"edit": seconds / 2},
           "unet_evaluations": {"edit": 20}, "unet_flops": {"edit": 1e9}, "model_set": "mini", "model_set_trained": True,
           "edit_size": [128, 64], "failed": status != "ok"}
    return {"run": {"method": method, "size": size, "width": w, "height": h,
                    "image": {"index": image, "seed": image, "family": "add"}},
            "report": rep, "status": status, "expected_unet_evaluations": {"edit": 20},
            "quality": {"psnr": 20.0 + (method == "mobilepicasso"), "artifact_ratio": 0.1 if method == "mobilepicasso" else 0.2},
            **extra}


def test_cost_table_ratios_against_mobilepicasso():
    results = [_result("mobilepicasso", "1024", i, s, 100) for i, s in enumerate((1.0, 2.0, 3.0))]
    results += [_result("ip2p-bicubic", "1024", i, s, 80) for i, s in enumerate((4.0, 6.0, 5.0))]
    results += [_result("ip2p-direct", "1024", 0, 0, 0, status="failed", derived={"total_seconds": 200.0, "unet_flops": 1e12})]
    df = tables.run_rows(results)
    cost = tables.cost_table(df, ["mobilepicasso", "ip2p-bicubic", "ip2p-direct"], ["1024"])
    bic = cost.set_index("method").loc["ip2p-bicubic"]
    assert (bic.seconds_median, bic.seconds_min, bic.seconds_max) == (5.0, 4.0, 6.0)
    assert bic.speedup_x == pytest.approx(2.5)  # 5 s / mobilepicasso's median 2 s
    assert bic.mp_memory_vs_this_pct == pytest.approx(25.0)  # 100 MiB vs 80 MiB
    assert bool(bic.unet_evals_match_planner)
    direct = cost.set_index("method").loc["ip2p-direct"]
    assert direct.status == "failed" and direct.speedup_x == pytest.approx(100.0) and direct.speedup_source == "derived"
    head = tables.headline_table(df, cost, ["mobilepicasso", "ip2p-bicubic"], ["1024"], n_boot=200)
    row = head.iloc[0]
    assert row.quality_pct == pytest.approx(5.0)       # 21 dB vs 20 dB
    assert row.hallucination_pct == pytest.approx(-50.0)  # artifact ratio 0.1 vs 0.2
    assert "+5.0%" in tables.headline_markdown(head, cost).iloc[0]["quality (PSNR) +x% [95% CI]"]


def test_patchwise_cells_not_run_scale_by_patch_count():
    results = [_result("mobilepicasso", s, 0, 1.0, 100) for s in ("2048", "4k")]
    results += [_result("ip2p-patchwise", "2048", 0, 144.0, 100, tiles=144)]
    results[-1]["report"]["edit_size"] = [128, 128]
    results[-1]["report"]["tiling"] = {"tiles": 144}
    df = tables.run_rows(results)
    cost = tables.cost_table(df, ["mobilepicasso", "ip2p-patchwise"], ["2048", "4k"],
                             {("ip2p-patchwise", "4k"): "2048"}).set_index(["size", "method"])
    row = cost.loc[("4k", "ip2p-patchwise")]
    # 2048x1152 -> 16 x 9 = 144 patches of 128 px; 3840x2160 -> 30 x 17 = 510
    assert row["status"] == "derived" and row["derived_seconds"] == pytest.approx(510.0)
    assert row["unet_evals"] == pytest.approx(20 * 510 / 144) and row["speedup_x"] == pytest.approx(510.0)


# ------------------------------------------------------------------------------------ runs


def test_bench_images_are_16_9_and_cycle_families():
    from pipeline import synthedit as se

    imgs = bench_images(5)
    assert [i.family for i in imgs] == list(se.FAMILIES)
    assert all(se.split_of(i.seed) == "test" for i in imgs)
    assert output_size("4k") == (3840, 2160) and output_size("1024") == (1024, 576)


def test_full_policy_runs_every_method_on_the_same_images_round_robin():
    methods = ["mobilepicasso", "ip2p-direct", "ip2p-realesrgan", "ip2p-patchwise"]
    policy = full_policy(["1024", "2048", "4k"], images=3)
    assert {policy.runs_for(m, s) for m in methods for s in ("1024", "2048")} == {3}
    assert policy.runs_for("ip2p-patchwise", "4k") == 0 and policy.derive[("ip2p-patchwise", "4k")] == "2048"
    runs = plan_runs(methods, ["1024", "4k"], "mini", policy)
    assert [r.image.index for r in runs] == sorted(r.image.index for r in runs)  # round-robin by image
    for size in ("1024", "4k"):  # every method that runs at a size runs on the same images
        images = {m: {r.image.seed for r in runs if r.cell == (m, size)} for m in methods}
        assert len({frozenset(v) for v in images.values() if v}) == 1
    assert not any(r.cell == ("ip2p-patchwise", "4k") for r in runs)
    assert quick_policy(["768"]).runs_for("ip2p-patchwise", "768") == 1


def test_quality_table_uses_only_the_images_every_method_ran():
    results = [_result("mobilepicasso", "1024", i, 1.0, 100) for i in range(3)]
    results += [_result("ip2p-bicubic", "1024", i, 1.0, 100) for i in range(3)]
    results += [_result("ip2p-realesrgan", "1024", i, 1.0, 100) for i in (0, 2)]  # image 1 missing
    df = tables.run_rows(results)
    assert tables.common_images(df, "1024") == [0, 2]
    q = tables.quality_table(df, ["mobilepicasso", "ip2p-bicubic", "ip2p-realesrgan"], ["1024"])
    assert q["images"].tolist() == [2, 2, 2] and set(q["image_ids"]) == {"0;2"}


def test_paired_difference_and_its_t_interval():
    from scipy import stats

    base = np.array([20.0, 22.0, 25.0, 21.0])
    ours = base + np.array([1.0, 2.0, 0.5, 1.5])
    d = metrics.paired_difference(ours, base)
    assert d.n_images == 4 and d.mean == pytest.approx(1.25)
    half = stats.t.ppf(0.975, 3) * np.std([1.0, 2.0, 0.5, 1.5], ddof=1) / 2
    assert (d.low, d.high) == (pytest.approx(1.25 - half), pytest.approx(1.25 + half))
    one = metrics.paired_difference([3.0, math.nan], [1.0, 1.0])
    assert one.n_images == 1 and one.mean == 2.0 and math.isnan(one.low)


def test_headline_rows_carry_n_difference_and_interval():
    results = [_result(m, "1024", i, 1.0, 100) for m in ("mobilepicasso", "ip2p-bicubic") for i in range(3)]
    df = tables.run_rows(results)
    cost = tables.cost_table(df, ["mobilepicasso", "ip2p-bicubic"], ["1024"])
    row = tables.headline_table(df, cost, ["mobilepicasso", "ip2p-bicubic"], ["1024"], n_boot=100).iloc[0]
    assert row.quality_images == 3 and row.quality_diff == pytest.approx(1.0)  # 21 dB vs 20 dB on every image
    assert row.quality_diff_ci_low == pytest.approx(1.0) and row.quality_diff_ci_high == pytest.approx(1.0)
    text = tables.headline_markdown(pd.DataFrame([row]), cost).iloc[0]
    assert text["n (paired images)"] == 3 and text["PSNR difference, dB [95% CI]"] == "+1.00 [+1.00, +1.00]"


def test_identical_outputs_are_reported_per_pair():
    results = [_result(m, "512", i, 1.0, 100, output_sha256=f"{'same' if m != 'ip2p-bicubic' else m}{i}")
               for m in ("mobilepicasso", "tiled-naive", "ip2p-bicubic") for i in range(2)]
    results[3]["output_sha256"] = "different"  # tiled-naive, image 1
    same = tables.identical_outputs(tables.run_rows(results))
    assert same.to_dict("records") == [{"size": "512", "method_a": "mobilepicasso", "method_b": "tiled-naive",
                                        "images_compared": 2, "images_identical": 1}]


def test_refused_direct_cells_take_the_calibrated_estimate():
    results = [_result("mobilepicasso", "4k", 0, 2.0, 100),
               _result("ip2p-direct", "4k", 0, 0, 0, status="failed", derived={"total_seconds": 50.0, "unet_flops": 1e12})]
    df = tables.run_rows(results)
    plain = tables.cost_table(df, ["mobilepicasso", "ip2p-direct"], ["4k"]).set_index("method").loc["ip2p-direct"]
    assert plain.derived_seconds == 50.0 and plain.derived_from == "edit()'s single-pass estimate"
    cal = tables.cost_table(df, ["mobilepicasso", "ip2p-direct"], ["4k"], direct_estimates={"4k": 400.0})
    row = cal.set_index("method").loc["ip2p-direct"]
    assert row.derived_seconds == 400.0 and row.derived_from == "direct_calibration.csv"
    assert row.speedup_x == pytest.approx(200.0) and row.speedup_source == "derived"


def test_power_law_fit_recovers_the_exponent_and_predicts():
    from pipeline.bench import direct

    flops = np.array([1e9, 4e9, 2e10, 1e11])
    fit = direct.fit_power_law(flops, 3e-9 * flops**1.2)
    assert fit[0] == pytest.approx(1.2)
    assert direct.predict(fit, 1e12) == pytest.approx(3e-9 * 1e12**1.2)
    cal = pd.DataFrame([{"kind": "pass", "size": "256", "estimated_seconds": math.nan},
                        {"kind": "estimate", "size": "4k", "estimated_seconds": 123.0}])
    assert direct.calibrated_seconds(cal, "4k") == 123.0 and math.isnan(direct.calibrated_seconds(cal, "2048"))


def test_markdown_table():
    text = tables.markdown(pd.DataFrame([{"a": 1, "b": "x"}]))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |"]
