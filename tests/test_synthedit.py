"""SynthEdit: determinism, resolution consistency, disjoint splits, masks, artifacts."""
import numpy as np
import pytest
from PIL import Image

from pipeline import synthedit as se
from pipeline.bench.metrics import psnr


def test_deterministic_from_seed():
    a, b = se.sample(2_000_005), se.sample(2_000_005)
    assert a == b
    assert np.array_equal(np.asarray(a.source(96, 64)), np.asarray(b.source(96, 64)))
    assert np.array_equal(np.asarray(a.target(96, 64)), np.asarray(b.target(96, 64)))


@pytest.mark.parametrize("seed", [2_000_000, 2_000_001, 2_000_002, 1_000_003])
def test_resolution_consistency(seed):
    """The same vector scene at 512 px, box-downscaled to 128, matches the 128 px render."""
    ex = se.sample(seed)
    small = ex.target(128, 128)
    big = ex.target(512, 512).resize((128, 128), Image.Resampling.BOX)
    assert psnr(small, big) > 30


def test_window_matches_full_render():
    ex = se.sample(2_000_010)
    full = np.asarray(ex.source(400, 300), np.float64)
    crop = np.asarray(ex.source(100, 150, window=(0.25, 0.5, 0.5, 1.0)), np.float64)
    assert psnr(crop, full[150:300, 100:200]) > 35


def test_splits_disjoint_and_clean():
    sets = {s: set(se.split_seeds(s, 500)) for s in se.SPLITS}
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert not (sets["validation"] & sets["test"])
    assert all(not se.sample(s).has_artifacts for s in se.split_seeds("test", 100))
    share = np.mean([se.sample(s).has_artifacts for s in se.split_seeds("train", 400)])
    assert 0.22 < share < 0.38  # default fraction 0.3
    assert not any(se.sample(s, artifact_fraction=0.0).has_artifacts for s in se.split_seeds("train", 50))


@pytest.mark.parametrize("family", se.FAMILIES)
def test_families_and_masks(family):
    ex = se.sample(2_000_020, family=family)
    assert ex.family == family and ex.instruction
    mask = ex.edit_mask(128, 128)
    assert mask.shape == (128, 128) and mask.dtype == bool
    src, tgt = np.asarray(ex.source(128, 128), np.int16), np.asarray(ex.target(128, 128), np.int16)
    changed = np.abs(src - tgt).max(axis=2) > 6
    assert np.array_equal(changed, mask) and mask.any()
    if family == "global":
        assert mask.mean() > 0.5
    else:
        assert mask.mean() < 0.95
    assert not ex.artifact_mask(128, 128).any()


def test_artifacts_have_masks():
    seeds = [s for s in se.split_seeds("train", 60) if se.sample(s).has_artifacts]
    assert seeds
    for s in seeds[:5]:
        ex = se.sample(s)
        m = ex.artifact_mask(128, 128)
        assert m.any()
        diff = np.abs(np.asarray(ex.target(128, 128), np.int16) - np.asarray(ex.target(128, 128, artifacts=False), np.int16))
        assert (diff.max(axis=2)[~m] <= 12).all()


def test_any_aspect_and_4k():
    ex = next(se.sample(s) for s in se.split_seeds("test", 50) if abs(se.sample(s).source_scene.aspect - 16 / 9) < 1e-6)
    assert ex.size(3840) == (3840, 2160)
    im = ex.source(3840, 2160)
    assert im.size == (3840, 2160)
