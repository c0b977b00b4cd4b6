"""`python -m pipeline bench --quick` (both suites) writes every CSV, plot and the README."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
MAIN_FILES = ["runs.csv", "cost.csv", "quality.csv", "headline.csv", "identical_outputs.csv", "meta.json", "cost.png",
              "stages.png", "quality.png", "seams.png", "direct_calibration.csv", "direct_meta.json"]
TILES_FILES = ["limit_ratio.csv", "tile_cost.csv", "tile_choice.csv", "derived_cost.csv", "meta.json",
               "tile_cost.png", "limit_ratio.png", "derived_cost.png"]


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOBILEPICASSO_CACHE": os.environ.get("MOBILEPICASSO_CACHE", str(root / "cache"))}
    for args in (["--quick", "--out", str(root / "bench")], ["--suite", "direct", "--quick", "--out", str(root / "bench")],
                 ["--suite", "tiles", "--quick", "--out", str(root / "tiles")]):
        proc = subprocess.run([sys.executable, "-m", "pipeline", "bench", *args, "--no-progress"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_quick_writes_every_file(quick_results):
    for name in MAIN_FILES:
        assert (quick_results / "bench" / name).stat().st_size > 0, name
    for name in TILES_FILES:
        assert (quick_results / "tiles" / name).stat().st_size > 0, name
    readme = (quick_results / "README.md").read_text()
    for link in ("bench/cost.png", "bench/quality.png", "bench/seams.png", "tiles/tile_cost.png", "tiles/limit_ratio.png"):
        assert f"]({link})" in readme
    assert "## Definitions" in readme and "## Headline" in readme and "## Tiling" in readme
    assert "## ip2p-direct's time estimate, calibrated" in readme and "## Byte-identical outputs" in readme


def test_quick_quality_is_paired_and_direct_is_calibrated(quick_results):
    quality = pd.read_csv(quick_results / "bench" / "quality.csv", dtype={"size": str})
    assert (quality.groupby("size")["images"].nunique() == 1).all()  # the same image count for every method
    head = pd.read_csv(quick_results / "bench" / "headline.csv")
    assert {"quality_images", "quality_diff", "quality_diff_ci_low", "quality_diff_ci_high"} <= set(head.columns)
    cal = pd.read_csv(quick_results / "bench" / "direct_calibration.csv", dtype={"size": str})
    assert (cal["kind"] == "pass").sum() >= 3 and (cal["kind"] == "check").sum() >= 2
    checks = cal[cal["kind"] == "check"]
    assert (checks["status"] == "ok").all() and (checks["measured_cpu_seconds"] > 0).all()
    assert (cal[cal["kind"] != "pass"]["estimated_seconds"] > 0).all()
    # larger sizes cost more: the fit is increasing in FLOPs
    assert cal["fit_exponent"].iloc[0] > 0


def test_quick_rows_cover_every_method_and_check_the_counts(quick_results):
    cost = pd.read_csv(quick_results / "bench" / "cost.csv")
    assert set(cost["method"]) == set(METHODS)
    ran = cost[cost["status"] == "ok"]
    assert ran["unet_evals_match_planner"].all()
    direct = cost.set_index("method").loc["ip2p-direct"]
    if direct["status"] == "failed":  # over its time budget: a row with a derived time, not a crash
        assert direct["derived_seconds"] > 0 and "over budget" in direct["failure_reason"]
    runs = pd.read_csv(quick_results / "bench" / "runs.csv")
    tiled = runs[runs["method"].isin(["mobilepicasso-paper", "tiled-naive", "tiled-overlap"])]
    assert tiled["seam_ratio"].notna().all() and tiled["psnr"].notna().all()
    head = pd.read_csv(quick_results / "bench" / "headline.csv")
    assert set(head["baseline"]) == set(METHODS) - {"mobilepicasso"}


def test_quick_tiles_tables(quick_results):
    limits = pd.read_csv(quick_results / "tiles" / "limit_ratio.csv")
    naive = limits[(limits["what"] == "upscaler:naive")]
    assert (naive["limit_ratio"] == 1.0).all()  # no overlap, no halo: the limit itself
    assert (limits[limits["what"] == "upscaler:overlap"]["limit_ratio"] >= 1.0).all()
    costs = pd.read_csv(quick_results / "tiles" / "tile_cost.csv")
    assert (costs["status"] == "ok").all() and (costs["seconds_per_tile"] > 0).all()
    derived = pd.read_csv(quick_results / "tiles" / "derived_cost.csv")
    mp = derived[(derived["method"] == "mobilepicasso-paper")].iloc[0]
    assert mp["measured"] == "yes" and mp["total_s_measured"] > 0
    # exact FLOPs from the planner x per-window-shape counts equal what the run counted
    assert mp["unet_gflops_derived"] == pytest.approx(mp["unet_gflops_measured"], rel=1e-3)
    direct = derived[derived["method"] == "ip2p-direct"]
    assert len(direct) == derived["size"].nunique() and (direct["total_s_derived"] > 0).all()
