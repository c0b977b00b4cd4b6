"""demo.compare, demo.examples and the Edit tab's labels, without a server."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pipeline
from demo import compare
from demo.edit_tab import model_notice
from demo.examples import write_examples
from pipeline.model_sets import SetInfo


def test_crop_box_is_clipped_to_the_image_and_never_larger():
    assert compare.crop_box((3840, 2160), 50, 50, 512) == (1664, 824, 2176, 1336)
    assert compare.crop_box((3840, 2160), 0, 0, 512) == (0, 0, 512, 512)
    assert compare.crop_box((3840, 2160), 100, 100, 512) == (3328, 1648, 3840, 2160)
    assert compare.crop_box((300, 200), 50, 50, 512) == (0, 0, 300, 200)


def test_progress_names_method_stage_and_tile():
    assert compare.progress_text("mobilepicasso", "upscale", 12, 40, 1, 1) == "mobilepicasso: upscale tile 12/40"
    assert compare.progress_text("mobilepicasso", "edit", 3, 20, 2, 3) == "[2/3] mobilepicasso: edit step 3/20"


def test_preview_keeps_the_aspect_ratio():
    assert compare.preview_size((3840, 2160)) == (1280, 720)
    assert compare.preview_size((256, 171)) == (256, 171)


def test_metrics_show_latency_memory_evaluations_tiles_and_failures():
    report = {"output_size": [3840, 2160], "total_seconds": 12.34, "stage_seconds": {"edit": 2.0, "upscale": 9.0},
              "peak_memory_bytes": 1_500_000_000, "peak_memory_measure": "process peak RSS",
              "unet_evaluations": {"edit": 60, "upscale": 40}, "total_unet_evaluations": 100,
              "tiling": {"mode": "acpt", "tile": 64, "halo": 8, "grid": [5, 8], "tiles": 40}}
    text = compare.metrics_markdown(compare.MethodOutput("mobilepicasso", report, path=None))
    for part in ("Latency** 12.3 s", "Peak memory** 1.50 GB", "U-Net evaluations** 100", "Tiles** 40", "5×8"):
        assert part in text
    failed = compare.metrics_markdown(compare.MethodOutput("ip2p-direct", {**report, "tiling": None},
                                                           error="over budget: needs 900 s"))
    assert "**Failed:** over budget: needs 900 s" in failed and "Tiles** none" in failed


def test_model_notice_is_honest_about_training():
    untrained = SetInfo("mini", "bundled", untrained=("unet", "vae"))
    assert "UNTRAINED" in model_notice("mini", untrained) and "unet, vae" in model_notice("mini", untrained)
    trained = SetInfo("mini", "bundled")
    text = model_notice("mini", trained)
    assert "UNTRAINED" not in text and "SynthEdit" in text and "Photos will not edit well" in text
    assert "not available" in model_notice("sd15", None, "no network to download the Hub weights.")


def test_examples_cover_synthedit_and_photos(tmp_path):
    examples = write_examples(tmp_path)
    kinds = {e.kind for e in examples}
    assert kinds == {"synthedit", "photo"}
    for e in examples:
        assert e.path.is_file() and e.instruction.strip()
        with Image.open(e.path) as img:
            assert img.mode == "RGB" and max(img.size) >= 256
    assert [e.path for e in write_examples(tmp_path)] == [e.path for e in examples]  # cached, same files


def test_run_comparison_keeps_full_resolution_pngs_and_zoom_crops_match(tmp_path):
    source = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(source)
    steps = []
    c = compare.run_comparison(source, "make it snowy", ["mobilepicasso", "ip2p-bicubic"], size="160", models="mini",
                               seed=1, steps=1, text_guidance=1.0, image_guidance=1.0, root=tmp_path,
                               on_step=lambda *a: steps.append(a))
    assert c.output_size == (160, 120) and [o.method for o in c.outputs] == ["mobilepicasso", "ip2p-bicubic"]
    for o in c.outputs:
        with Image.open(o.path) as img:
            assert img.format == "PNG" and img.size == (160, 120)
        assert o.report["total_unet_evaluations"] >= 1
    assert ("mobilepicasso", "edit", 1, 1) in steps  # its upscaler runs only where the edit drew new structure
    reference, crops = compare.zoom(c, 25, 75, 64)
    assert reference.shape == (64, 64, 3) and all(crop.shape == (64, 64, 3) for crop in crops.values())
    x0, y0, _, _ = compare.crop_box(c.output_size, 25, 75, 64)
    full = np.asarray(Image.open(c.get("ip2p-bicubic").path))
    assert np.array_equal(crops["ip2p-bicubic"], full[y0:y0 + 64, x0:x0 + 64])
    assert compare.Comparison.from_state(c.to_state()).to_state() == c.to_state()


def test_run_comparison_refuses_bad_input_before_any_work(tmp_path):
    with pytest.raises(pipeline.InputError, match="at least one method"):
        compare.run_comparison(tmp_path / "x.png", "go", [], size="1k", models="mini", seed=0, steps=1,
                               text_guidance=1, image_guidance=1, root=tmp_path)
    with pytest.raises(pipeline.InputError, match="no such image"):
        compare.run_comparison(tmp_path / "x.png", "go", ["mobilepicasso"], size="1k", models="mini", seed=0, steps=1,
                               text_guidance=1, image_guidance=1, root=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_old_runs_are_pruned(tmp_path):
    made = [compare.new_run_dir(tmp_path, keep=3) for _ in range(5)]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(p.name for p in made[-3:])
