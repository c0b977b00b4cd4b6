"""The app end to end through `gradio_client` (the public `/edit` endpoint), plus how it degrades."""
from __future__ import annotations

import sys

import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app
from pipeline.inputs import parse_size
from test_app_support import TEST_SIZE, running_app, small_config


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(small_config(tmp_path_factory.mktemp("app"))) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import skimage.data

    path = tmp_path_factory.mktemp("inputs") / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(path)
    return path


def edit(client, image, instruction="make it snowy", methods=("mobilepicasso",), size=TEST_SIZE, seed=3):
    return client.predict(handle_file(str(image)) if image else None, instruction, list(methods), size, seed, False,
                          2, 1.0, 1.0, api_name="/edit")


def test_edit_endpoint_returns_full_resolution_pngs_and_metrics(client, photo):
    seed, slider, status, files, reports, = edit(client, photo, methods=("mobilepicasso", "ip2p-bicubic"))
    expected = parse_size(TEST_SIZE, Image.open(photo).size)
    assert seed == 3 and "2 of 2 methods" in status
    assert [p.rsplit("/", 1)[-1] for p in files] == ["mobilepicasso.png", "ip2p-bicubic.png"]
    for path in files:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == expected
    assert len(slider) == 2 and all(p.endswith(".png") for p in slider)
    mp, bicubic = reports["mobilepicasso"], reports["ip2p-bicubic"]
    for report in (mp, bicubic):
        assert report["error"] is None and tuple(report["output_size"]) == expected
        assert report["total_seconds"] > 0 and report["peak_memory_bytes"] > 0
        assert report["model_set"] == "mini" and report["seed"] == 3 and report["steps"] == 2
    # mobilepicasso runs the upscaler only on tiles where the edit drew new structure: maybe none
    assert set(mp["region"]) >= {"source", "transfer", "generative"}
    if mp["tiling"]:
        assert mp["tiling"]["mode"] == "acpt" and mp["unet_evaluations"]["upscale"] == mp["tiling"]["tiles"]
    assert "upscale" not in bicubic["unet_evaluations"]


def test_randomised_seed_is_returned(client, photo):
    result = client.predict(handle_file(str(photo)), "make it snowy", ["ip2p-bicubic"], TEST_SIZE, 0, True, 1, 1.0, 1.0,
                            api_name="/edit")
    assert result[4]["ip2p-bicubic"]["seed"] == result[0]


@pytest.mark.parametrize("image, instruction, methods, message", [
    (None, "make it snowy", ("mobilepicasso",), "Upload an image"),
    ("photo", "   ", ("mobilepicasso",), "instruction is empty"),
    ("photo", "make it snowy", (), "at least one method"),
    ("photo", "x" * 400, ("mobilepicasso",), "too long"),
    ("truncated", "make it snowy", ("mobilepicasso",), "truncated or corrupt"),
    ("not-an-image", "make it snowy", ("mobilepicasso",), "not an image that can be read"),
    ("huge", "make it snowy", ("mobilepicasso",), "too large"),
])
def test_bad_input_is_a_clear_message_and_the_app_stays_up(client, photo, tmp_path, image, instruction, methods,
                                                           message):
    if image == "truncated":
        image = tmp_path / "truncated.png"
        image.write_bytes(photo.read_bytes()[:5000])
    elif image == "not-an-image":
        image = tmp_path / "notes.png"
        image.write_text("a text file with an image's name")
    elif image == "huge":  # over pipeline.inputs.MAX_INPUT_PIXELS, small on disk
        image = tmp_path / "huge.png"
        Image.new("RGB", (7200, 7200), (10, 20, 30)).save(image)
    elif image == "photo":
        image = photo
    with pytest.raises(Exception) as err:
        edit(client, image, instruction, methods)
    assert message in str(err.value) and "Traceback" not in str(err.value)
    assert "1 of 1" in edit(client, photo, methods=("ip2p-bicubic",))[2]  # still serving


def test_a_failing_method_is_reported_in_its_column_and_the_others_still_show(client, photo, monkeypatch):
    import pipeline

    real = pipeline.edit

    def over_budget(image, instruction, *, method, **kwargs):
        result = real(image, instruction, method="ip2p-bicubic" if method == "ip2p-direct" else method, **kwargs)
        if method == "ip2p-direct":
            result.report.failed, result.report.failure_reason = True, "over budget: test"
            result.image = None
        return result

    monkeypatch.setattr("demo.compare.pipeline.edit", over_budget)
    _, _, status, files, reports = edit(client, photo, methods=("ip2p-direct", "ip2p-bicubic"))
    assert "1 of 2" in status and "ip2p-direct" in status
    assert [p.rsplit("/", 1)[-1] for p in files] == ["ip2p-bicubic.png"]
    assert reports["ip2p-direct"]["error"] == "over budget: test"


def test_study_and_results_tabs_explain_why_they_are_empty(tmp_path):
    built = app.build_app(small_config(tmp_path, stimuli=str(tmp_path / "missing")))
    text = str(built.blocks.config)
    assert built.study is None and "No study is prepared here" in text
    assert "Edit" in text and "Results" in text


def test_the_app_starts_when_a_tab_module_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "stimuli").mkdir()
    monkeypatch.setitem(sys.modules, "study.ui", None)           # import fails
    monkeypatch.setitem(sys.modules, "study.analysis.ui", None)
    built = app.build_app(small_config(tmp_path, stimuli=str(tmp_path / "stimuli"), study_db=str(tmp_path / "s.db")))
    text = str(built.blocks.config)
    assert "The Study tab failed to load" in text and "The Results tab failed to load" in text
    assert "edit-run" in text


def test_prepared_study_is_mounted_with_its_json_api(tmp_path):
    import requests

    from study.stimuli import dry_run_renderer, prepare, read_items

    db, stimuli = str(tmp_path / "study.db"), tmp_path / "stimuli"
    items = read_items("study/items.csv")[:2]
    prepare(items, ["mobilepicasso", "ip2p-bicubic"], "64", stimuli, db, render=dry_run_renderer, progress=False)
    config = small_config(tmp_path, study_db=db, stimuli=str(stimuli))
    with running_app(config) as url:
        joined = requests.post(url + "study/api/session", json={"pid": "tester"}, timeout=30)
        assert joined.status_code == 200 and joined.json()["status"] == "consent"
        assert requests.get(url + "study/api/admin/progress", timeout=30).status_code == 401
        page = requests.get(url, timeout=30).text
        assert "study-consent" in page or "gradio" in page.lower()


def test_the_default_cache_is_private_to_the_user_and_overridable(tmp_path, monkeypatch):
    monkeypatch.delenv("MOBILEPICASSO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config = app.AppConfig()
    assert config.cache_dir == tmp_path / "xdg" / "mobilepicasso" / "demo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert app.AppConfig().cache_dir == tmp_path / "home" / ".cache" / "mobilepicasso" / "demo"
    monkeypatch.setenv("MOBILEPICASSO_CACHE", str(tmp_path / "mine"))
    assert app.AppConfig().cache_dir == tmp_path / "mine"

    made = app.open_cache_dir(tmp_path / "fresh" / "cache")
    assert made.is_dir() and made.stat().st_mode & 0o077 == 0  # other users can neither list nor read it


def test_the_study_server_and_the_demo_default_to_different_ports():
    import argparse

    from study import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    study_port = parser.parse_args(["serve"]).port
    assert study_port == 7861 and app.parse_args([]).port == 7860
