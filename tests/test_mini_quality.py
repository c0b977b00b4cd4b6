"""The bundled `mini` set, measured on fixed SynthEdit *test* seeds at small sizes (fast enough for CI).

What is asserted is what the shipped weights achieve: floors at the measured level (results/mini/*.csv)
minus a stated margin, so a regression fails and an improvement passes.

- edit stage (shipped sampler settings) vs "no edit" per family, and vs the untrained model;
- one-step SR vs bicubic of the decoded latent at x4 and x8 (the same information);
- end to end at a reduced size (512x288 = x4 of the 128x72 edit; 4K is in
  results/mini/end_to_end.csv): mobilepicasso-paper vs ip2p-bicubic, and vs tiled-overlap (within 0.3 dB);
- the edit-region model's IoU and the local edit against ip2p-bicubic, as floors at the measured level;
- the folder reloads offline with every component trained.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline import synthedit as se
from pipeline.bench.metrics import psnr
from pipeline.model_sets import BUNDLED, load_local_set
from pipeline.train.evaluate import (by_family, decode_image, edit_images, edit_metrics, encode_image, sr_image,
                                     untrained_set)
from pipeline.train.evaluate import test_examples as examples

MINI = BUNDLED / "mini"
COMPONENTS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler", "projector", "upscaler", "upscaler_scheduler",
              "detector", "edit_region", "look")
# Measured on 80 test examples per family (results/mini/edit_quality.csv; README 'Model sets -> mini').
EDIT_LIMIT = {
    "recolour": "20.68 vs 22.52 dB for no edit, gain -1.84 (95% CI -3.03 to -0.64); the source passed through "
                "the autoencoder alone scores 20.61: the 16x16x4 latent costs more than the edit gains",
    "remove": "22.69 vs 24.35 dB for no edit, gain -1.66 (95% CI -3.08 to -0.24); the source passed through "
              "the autoencoder alone scores 22.23: the 16x16x4 latent costs more than the edit gains",
    "add": "19.43 vs 23.88 dB for no edit, gain -4.45 (95% CI -5.35 to -3.54); the autoencoder alone costs "
           "3.4 dB, so even a perfect latent edit (24.00) would beat no edit by only 0.12 dB",
}
SR_LIMIT = ("the one-step SR on the learned projection scores 0.15 / 0.26 dB below bicubic of the decoded latent "
            "at x4 / x8 (24.80 vs 24.94, 24.57 vs 24.83 dB on 8 test images, results/mini/upscaler.csv); an upscaler "
            "that knew the exact high-resolution detail would gain only 0.86 / 0.97 dB over it")
E2E_LIMIT = ("end to end, mobilepicasso-paper scores 18.34 vs 18.54 dB for ip2p-bicubic at 3840x2160 and 18.32 vs 18.56 dB "
             "at 960x540 (3 test images, results/mini/end_to_end.csv): the upscaler's gap above")


@pytest.fixture(scope="module")
def models():
    return load_local_set(MINI)


@pytest.fixture(scope="module")
def edit_table(models):
    exs = examples(40)  # 8 per family, ~35 s; the README's table uses 80 per family
    info = models.info
    rows = edit_metrics(models, exs, edit_images(models, exs, info.steps, info.text_guidance, info.image_guidance))
    untrained = untrained_set(MINI)
    urows = edit_metrics(untrained, exs, edit_images(untrained, exs, info.steps, info.text_guidance, info.image_guidance))
    table = {r["family"]: r for r in by_family(rows, ["psnr", "no_edit"])}
    for r in by_family(urows, ["psnr"]):
        table[r["family"]]["untrained"] = r["psnr"]
    return table


def test_bundled_set_reloads_offline_and_is_trained():
    code = ("from pipeline.model_sets import load_local_set, BUNDLED; m = load_local_set(BUNDLED / 'mini'); "
            "print(m.info.trained, m.info.untrained)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True ()"
    for c in COMPONENTS:
        assert (MINI / c).is_dir(), c
    info = load_local_set(MINI).info
    assert "not photos" in info.trained_on and "not photos" in info.description
    assert sum(f.stat().st_size for f in MINI.rglob("*.safetensors")) <= 50 * 2 ** 20


@pytest.mark.parametrize("family", se.FAMILIES)
def test_edit_beats_untrained(edit_table, family):
    assert edit_table[family]["psnr"] > edit_table[family]["untrained"] + 3, edit_table[family]


# Floors on the edit stage's gain over no edit (dB): at or below the lower 95% bound measured on 80
# per family (EDIT_LIMIT), so a regression fails; background and global must beat no edit.
EDIT_GAIN_FLOORS = {"background": 0.0, "global": 0.0, "recolour": -3.1, "remove": -3.1, "add": -5.4}


@pytest.mark.parametrize("family", list(EDIT_GAIN_FLOORS))
def test_edit_gain_over_no_edit_floor(edit_table, family):
    gain = edit_table[family]["psnr"] - edit_table[family]["no_edit"]
    assert gain > EDIT_GAIN_FLOORS[family], (edit_table[family], EDIT_LIMIT.get(family))


@pytest.mark.parametrize("scale", [4, 8])
def test_sr_within_its_measured_gap_to_bicubic(models, scale):
    """The SR and bicubic get the same information: the 16x16x4 latent of the 128 px frame (bicubic
    upsamples its decoding, as `ip2p-bicubic` does). Bicubic of the clean 128 px render is reported
    in results/mini/upscaler.csv too; no latent upscaler can reach it (the autoencoder's loss at 128 px)."""
    gains, scores = [], []
    for ex in examples(3):
        size = (128 * scale, 128 * scale)
        lr = ex.target(128, 128, artifacts=False)
        gt = ex.target(*size, artifacts=False)
        decoded = decode_image(models, encode_image(models, lr))
        scores.append(psnr(sr_image(models, lr, size, "learned"), gt))
        gains.append(scores[-1] - psnr(decoded.resize(size, Image.Resampling.BICUBIC), gt))
    assert np.mean(gains) > -0.6, (gains, SR_LIMIT)  # measured -0.15 / -0.26 dB on 8 images
    # the gap is relative (an untrained autoencoder and SR fail together); the level is not:
    # measured 23.23 / 22.96 dB on these 3 images at x4 / x8
    assert np.mean(scores) > SR_FLOORS[scale], scores


SR_FLOORS = {4: 22.2, 8: 21.9}  # measured minus 1 dB


@pytest.fixture(scope="module")
def e2e_scores():
    from pipeline import edit

    ex = next(e for e in examples(40) if abs(e.source_scene.aspect - 16 / 9) < 1e-6)
    size = (512, 288)
    gt = ex.target(*size, artifacts=False)
    src = ex.source(*ex.size(512))
    return {m: psnr(edit(src, ex.instruction, method=m, size=size, models=str(MINI)).image, gt)
            for m in ("mobilepicasso-paper", "ip2p-bicubic", "tiled-overlap")}


def test_end_to_end_matches_tiled_overlap(e2e_scores):
    assert e2e_scores["mobilepicasso-paper"] > e2e_scores["tiled-overlap"] - 0.3, e2e_scores


def test_end_to_end_within_its_measured_gap_to_bicubic(e2e_scores):
    assert e2e_scores["mobilepicasso-paper"] > e2e_scores["ip2p-bicubic"] - 0.8, (e2e_scores, E2E_LIMIT)
    assert e2e_scores["mobilepicasso-paper"] > 18.6, e2e_scores  # measured 19.63 dB, minus 1 dB


# Measured on these fixed sets with the shipped weights; each floor is the measured value minus the
# stated margin, so a regression fails and an improvement passes.
# measured on these 150 test seeds: recolour 0.729, remove 0.786, background 0.989, global 0.978, add 0.865
REGION_FLOORS = {"recolour": 0.71, "remove": 0.76, "background": 0.97, "global": 0.96, "add": 0.84}
# the region the pipeline uses, refined at the edit size, same seeds: recolour 0.788, remove 0.845,
# background 0.990, global 0.985, add 0.799 (only upsampled)
EDIT_SIZE_FLOORS = {"recolour": 0.77, "remove": 0.82, "background": 0.97, "global": 0.96, "add": 0.78}
# (mean error in 8-bit levels inside the true region, decision accuracy); measured 21.3 / 10.7 / 1.4 / 5.9, all 1.0
COLOUR_MAP_LIMITS = {"recolour": (23.5, 0.97), "background": (13.0, 0.97), "global": (3.0, 0.97), "add": (8.0, 0.97),
                     "remove": (float("nan"), 0.97)}
# On 10 test seeds at 384 px (refined region, surround fill): +14.29 dB over ip2p-bicubic, +16.93 dB over
# no edit, 41.37 dB PSNR outside the true edit mask.
LOCAL_GAIN_FLOOR, LOCAL_UNEDITED_FLOOR, LOCAL_OVER_NO_EDIT_FLOOR = 13.3, 40.3, 15.9
# On the first 20 *add* examples of 150 test seeds at 384 px: the named shape present in all 20, +4.99 dB over no edit.
ADD_PRESENT_FLOOR, ADD_OVER_NO_EDIT_FLOOR = 0.9, 4.0


def test_edit_region_iou_floors(models):
    from pipeline.train.edit_region import build_pool, iou_by_family, tensors

    data = tensors(build_pool(se.split_seeds("test", 150), 0.0, 0, workers=1), models.edit_pipeline)
    ious = iou_by_family(models.edit_region, data)
    for family, floor in REGION_FLOORS.items():
        assert ious[family] >= floor, ious


def test_refined_edit_region_iou_floors_at_the_edit_size(models):
    from pipeline.train.evaluate import edit_size_iou

    ious = edit_size_iou(models, se.split_seeds("test", 150), [])
    for family, floor in EDIT_SIZE_FLOORS.items():
        assert ious[family] >= floor, ious


def test_region_colour_map_ceilings(models):
    from pipeline.train.edit_region import build_pool, colour_by_family, tensors

    data = tensors(build_pool(se.split_seeds("test", 150), 0.0, 0, workers=1), models.edit_pipeline)
    colour = colour_by_family(models.edit_region, data)
    for family, (ceiling, floor) in COLOUR_MAP_LIMITS.items():
        error, accuracy = colour[family]
        assert accuracy >= floor, colour
        assert family == "remove" or error <= ceiling, colour


def test_local_edit_beats_bicubic_and_keeps_the_unedited_region():
    from pipeline import edit

    gains, over_source, unedited = [], [], []
    for ex in examples(10):
        w, h = ex.size(384)
        src, gt, mask = ex.source(w, h), np.asarray(ex.target(w, h)), ex.edit_mask(w, h)
        memo: dict = {}
        ours = np.asarray(edit(src, ex.instruction, size=(w, h), models=str(MINI), memo=memo).image)
        bicubic = np.asarray(edit(src, ex.instruction, method="ip2p-bicubic", size=(w, h), models=str(MINI), memo=memo).image)
        gains.append(psnr(ours, gt) - psnr(bicubic, gt))
        over_source.append(psnr(ours, gt) - psnr(np.asarray(src), gt))
        if (~mask).any():
            unedited.append(psnr(ours[~mask], gt[~mask]))
    assert np.mean(gains) > LOCAL_GAIN_FLOOR, gains
    assert np.mean(over_source) > LOCAL_OVER_NO_EDIT_FLOOR, over_source  # returning the source is not an edit
    assert np.mean(unedited) > LOCAL_UNEDITED_FLOOR, unedited


def test_an_added_shape_is_there_in_its_named_colour():
    from pipeline import edit
    from pipeline.train.evaluate_local import shape_present

    adds = [e for e in map(se.sample, se.split_seeds("test", 150)) if e.family == "add"][:20]
    present, over_source = [], []
    for ex in adds:
        w, h = ex.size(384)
        src, gt, mask = ex.source(w, h), np.asarray(ex.target(w, h)), ex.edit_mask(w, h)
        out = np.asarray(edit(src, ex.instruction, size=(w, h), models=str(MINI)).image)
        present.append(shape_present(out, ex, mask))
        over_source.append(psnr(out, gt) - psnr(np.asarray(src), gt))
    assert np.mean(present) >= ADD_PRESENT_FLOOR, present
    assert np.mean(over_source) > ADD_OVER_NO_EDIT_FLOOR, over_source
