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


def test_examples_cover_synthedit_looks_and_photos(tmp_path):
    examples = write_examples(tmp_path)
    kinds = {e.kind for e in examples}
    assert kinds == {"synthedit", "look", "photo"}
    from pipeline.photoedit import PHRASES

    assert all(e.look and e.instruction == PHRASES[e.look][0] for e in examples if e.kind == "look")
    for e in examples:
        assert e.path.is_file() and e.instruction.strip()
        with Image.open(e.path) as img:
            assert img.mode == "RGB" and max(img.size) >= 256
    assert [e.path for e in write_examples(tmp_path)] == [e.path for e in examples]  # cached, same files


def test_run_comparison_keeps_full_resolution_pngs_and_zoom_crops_match(tmp_path):
    from pipeline import synthedit

    # a removal: mobilepicasso fills it from its surround with no U-Net; ip2p-bicubic runs its editor
    ex = next(e for e in map(synthedit.sample, synthedit.split_seeds("test", 50))
              if e.family == "remove" and e.source_scene.aspect == 4 / 3)
    source = tmp_path / "in.png"
    ex.source(120, 90).save(source)
    steps = []
    c = compare.run_comparison(source, ex.instruction, ["mobilepicasso", "ip2p-bicubic"], size="160", models="mini",
                               seed=1, steps=1, text_guidance=1.0, image_guidance=1.0, root=tmp_path,
                               on_step=lambda *a: steps.append(a))
    assert c.output_size == (160, 120) and [o.method for o in c.outputs] == ["mobilepicasso", "ip2p-bicubic"]
    for o in c.outputs:
        with Image.open(o.path) as img:
            assert img.format == "PNG" and img.size == (160, 120)
    assert c.get("mobilepicasso").report["total_unet_evaluations"] == 0
    assert c.get("ip2p-bicubic").report["total_unet_evaluations"] >= 1
    assert ("ip2p-bicubic", "edit", 1, 1) in steps and not any(s[0] == "mobilepicasso" and s[1] == "edit" for s in steps)
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


# -- the first five minutes: estimates, examples offered, queue, uploads, tiles -----------------

def test_cost_model_interpolates_the_benchmark_and_prefers_what_ran_here():
    from demo.costs import CostModel, Estimate, duration, interpolate

    points = [(1024 * 576, 1.0), (2048 * 1152, 8.0), (3840 * 2160, 20.0)]
    assert interpolate(points, 1024 * 576) == 1.0 and interpolate(points, 3840 * 2160) == 20.0
    assert 1.0 < interpolate(points, 1536 * 864) < 8.0
    assert interpolate(points, 256 * 144) >= 0.25  # never below a quarter of the nearest measurement
    costs = CostModel("mini", bench={"mobilepicasso": points}, direct=lambda size: 1e5)
    assert costs.estimate("mobilepicasso", (1024, 576)).source == "benchmark"
    assert costs.estimate("ip2p-direct", (3840, 2160)).seconds == 1e5 and costs.estimate("ip2p-direct", (1, 1)).slow
    assert costs.estimate("a-new-method", (1024, 576)).seconds is None  # unknown until it ran here
    assert costs.total(["mobilepicasso", "a-new-method"], (1024, 576)) is None
    costs.observe("a-new-method", (1024, 576), 3.0)
    assert costs.estimate("a-new-method", (1024, 576)) == Estimate(3.0, "measured here")
    assert costs.estimate("a-new-method", (2048, 1152)).seconds == 12.0
    assert [duration(s) for s in (0.3, 4.2, 360, 20843, None)] == ["<1 s", "~4 s", "~6 min", "~5.8 h", "no estimate yet"]


def test_bundled_benchmark_gives_every_benchmarked_method_an_estimate():
    from demo.costs import CostModel

    costs = CostModel("mini")
    for method in ("mobilepicasso", "ip2p-bicubic", "ip2p-realesrgan", "ip2p-patchwise"):
        assert costs.estimate(method, (1024, 576)).seconds is not None
    assert costs.estimate("mobilepicasso", (1024, 576)).seconds < 10        # the default answers in seconds
    assert costs.estimate("ip2p-patchwise", (3840, 2160)).slow
    assert CostModel("some-other-set").bench == {}  # a benchmark of another set says nothing about this one


def test_examples_offered_follow_what_the_set_was_trained_on(tmp_path):
    from demo.edit_tab import examples_for
    from demo.examples import Example

    examples = [Example(tmp_path / "a.png", "x", "synthedit"), Example(tmp_path / "b.png", "y", "photo"),
                Example(tmp_path / "c.png", "make it night", "look", "night"),
                Example(tmp_path / "d.png", "make it sepia", "look", "sepia")]
    synthetic_only = SetInfo("mini", "bundled")  # trained_on says "not photos"
    assert [e.kind for e in examples_for(synthetic_only, examples)] == ["synthedit"]
    looks = SetInfo("mini", "bundled", photo_looks=("night",))
    assert [e.instruction for e in examples_for(looks, examples)] == ["x", "make it night"]
    photos = SetInfo("sd15", "hub", trained_on="the published checkpoints' training data (LAION-based photos)")
    assert [e.kind for e in examples_for(photos, examples)] == ["synthedit", "photo", "look", "look"]
    random_weights = SetInfo("sd15-arch", "random", trained_on="nothing: random weights")
    assert len(examples_for(random_weights, examples)) == 4
    assert examples_for(None, examples) == []
    assert "only the **SynthEdit** examples" in model_notice("mini", synthetic_only)
    assert "“make it night”" in model_notice("mini", looks) and "global looks" in model_notice("mini", looks)


def test_queue_counts_the_edits_ahead_and_their_estimated_work():
    from demo.jobs import EditQueue

    q = EditQueue()
    a, b, c = q.join(10.0), q.join(5.0), q.join(None)
    assert q.ahead(a) == (0, 0.0) and q.ahead(b) == (1, 10.0)
    assert q.ahead(c) == (2, 15.0)
    d = q.join(1.0)
    assert q.ahead(d) == (3, None)  # one of them has no estimate: say nothing rather than guess
    q.start(b)                      # a never started: its page went away
    assert q.ahead(c)[0] == 1 and not q.waiting(b) and q.waiting(c)
    q.finish(b)
    assert q.ahead(c) == (0, 0.0)


def test_upload_messages_are_one_sentence_without_paths(tmp_path):
    from demo.upload import check_file, sentence

    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    message = check_file(str(notes))
    assert message == "The file is not an image that can be read (PNG, JPEG, WebP, ...)."
    assert sentence(f"no such image file: {notes}", str(notes)) == "No such image file: the file."
    assert "/" not in sentence("cannot open /tmp/gradio/abc/x.png now")
    good = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(good)
    assert check_file(str(good)) is None


def test_checked_image_turns_an_unreadable_file_into_a_sentence(tmp_path):
    from gradio.data_classes import ImageData

    from demo.upload import CheckedImage, UnusableUpload

    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    component = CheckedImage(type="filepath", render=False)
    assert component.get_block_name() == "image"  # drawn by Gradio's own Image component
    out = component.preprocess(ImageData(path=str(notes), orig_name="notes.png"))
    assert isinstance(out, UnusableUpload) and "not an image that can be read" in out.message
    # a session copy is built from the class, so it checks too
    copy = type(component)(**{**component.constructor_args, "render": False})
    assert isinstance(copy.preprocess(ImageData(path=str(notes), orig_name="notes.png")), UnusableUpload)


def test_zoom_box_is_drawn_on_the_preview_and_failures_are_one_line(tmp_path):
    preview = tmp_path / "p.png"
    Image.new("RGB", (160, 90), (0, 0, 255)).save(preview)
    boxed = compare.preview_with_box(preview, (1600, 900), (400, 300, 800, 600))
    assert boxed.shape == (90, 160, 3)
    assert tuple(boxed[30, 60]) != (0, 0, 255) and tuple(boxed[45, 70]) == (0, 0, 255)  # outline, not fill
    c = compare.Comparison(tmp_path, preview, preview, (1600, 900), [
        compare.MethodOutput("mobilepicasso", {}, path=preview, preview=preview),
        compare.MethodOutput("ip2p-direct", {}, error="over budget: ~5.8 h"),
        compare.MethodOutput("ip2p-patchwise", {}, error="out of memory")])
    line = compare.failed_line(c)
    assert line.count("\n") == 0 and "ip2p-direct" in line and "out of memory" in line
    assert "mobilepicasso" not in line


def test_acted_pages_remember_recent_sessions_and_forget_the_oldest():
    from demo.jobs import ActedPages

    acted = ActedPages(limit=2)
    assert "a" not in acted
    acted.mark(None)                      # a call without a session (the API) is not recorded
    for session in ("a", "b", "a", "c"):  # "a" was marked again, so "b" is now the oldest
        acted.mark(session)
    assert "a" in acted and "c" in acted and "b" not in acted
