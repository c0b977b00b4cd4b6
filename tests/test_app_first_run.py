"""A first visit in a real browser (Debian's Chromium via Playwright): the preloaded example and its
cached result, an example click and Run with the result in view, a bad upload after an example, a
run after an error with no stale status, and a look on a photo example. It serves the app's real sizes and default (1K), so the
screenshots show what a visitor gets: `MOBILEPICASSO_SCREENSHOTS=results/demo` keeps them there."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import app
from test_app_support import clear_input, input_loaded, running_app

pytestmark = pytest.mark.browser
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
NEVER = ("Could not preprocess", "Traceback", "UnidentifiedImageError", "/tmp/", "gradio_api/file")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    config = app.AppConfig(models="mini", stimuli=None, cache_dir=tmp_path_factory.mktemp("first-run") / "cache")
    with running_app(config) as url:
        yield url


def _shot(page, name: str, tmp_path: Path, full_page: bool = False) -> None:
    folder = Path(os.environ.get("MOBILEPICASSO_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


def _no_internals(page) -> None:
    for text in ("#edit-status", "#edit-output"):
        content = page.locator(text).inner_text()
        assert not any(bad in content for bad in NEVER), content


def test_first_visit_example_run_bad_upload_and_rerun(served, chromium_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)  # a busy shared CPU serves the page slowly
            page.goto(served, timeout=300_000)
            # preloaded: the first example's image, instruction and cached result, no click needed
            expect(input_loaded(page)).to_be_visible(timeout=60_000)
            assert page.locator("#edit-instruction textarea").input_value().strip()
            expect(page.locator("#metrics-mobilepicasso")).to_contain_text("Latency", timeout=900_000)
            expect(page.locator("#edit-status")).to_contain_text("Example result")
            expect(page.locator("#edit-methods")).to_contain_text("mobilepicasso ·")  # estimate beside each method
            expect(page.locator("#edit-method-guide")).to_contain_text("what it does")
            for control in ("#edit-seed", "#edit-steps", "#edit-text-guidance", "#edit-image-guidance",
                            "#edit-seed-dice", "#edit-guidance-dice"):
                expect(page.locator(control)).to_be_visible()
            _shot(page, "after-load", tmp_path, full_page=True)

            # the examples sit below the results; clicking one brings the inputs back into view
            example = page.locator("#edit-examples tr.tr-body").first
            example.scroll_into_view_if_needed()
            example.click()
            expect(page.locator("#edit-status")).to_contain_text("Example loaded", timeout=30_000)
            expect(page.locator("#edit-results-group")).to_be_hidden()       # the old result is gone
            expect(page.locator("#edit-run")).to_be_in_viewport()
            page.locator("#edit-seed-dice").click()                          # a new seed: a real run, not the cache
            expect(page.locator("#edit-seed input")).not_to_have_value("0", timeout=30_000)
            page.locator("#edit-run").click()
            expect(page.locator("#edit-status")).to_contain_text("Done", timeout=300_000)
            expect(page.locator("#edit-run")).to_have_text("Run", timeout=30_000)
            expect(page.locator("#edit-run")).to_be_enabled()
            # the result is where the visitor is looking, without scrolling back
            expect(page.locator("#edit-slider img").first).to_be_in_viewport()
            expect(page.locator("#edit-status")).to_be_in_viewport()
            expect(page.locator("#metrics-mobilepicasso")).to_contain_text("Latency")
            _no_internals(page)
            _shot(page, "after-run", tmp_path)

            # the tiles as the visitor scrolls down to them: one width, previews drawn, crops at 1:1
            # (Gradio's images load lazily, so an image far below the viewport has no size yet)
            page.locator("#result-mobilepicasso").scroll_into_view_if_needed()
            tiles = page.locator("#edit-results > .result-tile:visible")
            expect(tiles).to_have_count(2)                                   # the input and mobilepicasso
            widths = {round(tiles.nth(i).bounding_box()["width"]) for i in range(2)}
            assert len(widths) == 1, widths
            for shown in ("#preview-input img", "#preview-mobilepicasso img", "#zoom-mobilepicasso img"):
                expect(page.locator(shown)).to_be_visible(timeout=30_000)
            crop = page.locator("#zoom-mobilepicasso img")
            natural, drawn = crop.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
            assert natural == 256 and abs(natural - drawn) <= 1, (natural, drawn)   # the default 256 px window
            _shot(page, "after-run-tiles", tmp_path)

            # a file that is not an image, uploaded right after an example click: the pipeline's sentence
            page.locator("#edit-examples tr.tr-body").first.click()
            expect(page.locator("#edit-status")).to_contain_text("Example loaded", timeout=30_000)
            notes = tmp_path / "notes.png"
            notes.write_text("a text file with an image's name")
            clear_input(page)
            page.locator("#edit-input input[type=file]").set_input_files(str(notes))
            expect(page.locator("#edit-status")).to_contain_text("not an image that can be read", timeout=60_000)
            expect(page.locator("#edit-results-group")).to_be_hidden()
            _no_internals(page)
            _shot(page, "after-bad-upload", tmp_path)

            # a second run after the error: no stale status, a fresh result
            page.locator("#edit-examples tr.tr-body").first.click()
            expect(page.locator("#edit-status")).to_contain_text("Example loaded", timeout=30_000)
            seed_before = page.locator("#edit-seed input").input_value()
            page.locator("#edit-seed-dice").click()                          # a real run again, not the cache
            expect(page.locator("#edit-seed input")).not_to_have_value(seed_before, timeout=30_000)
            page.locator("#edit-run").click()
            expect(page.locator("#edit-status")).to_contain_text("Done", timeout=300_000)
            expect(page.locator("#edit-status")).not_to_contain_text("from the cache")
            expect(page.locator("#edit-status")).not_to_contain_text("not an image")
            expect(page.locator("#edit-status .edit-status-error")).to_have_count(0)
            expect(page.locator("#metrics-mobilepicasso")).to_be_visible()
            _no_internals(page)

            # a look on a held-out photo: offered for the set's photo looks, named in its notice, and it runs
            expect(page.locator("body")).to_contain_text("edits photos only with global looks")
            look = page.locator("#edit-examples tr.tr-body", has_text="make it black and white").first
            look.scroll_into_view_if_needed()
            look.click()
            expect(page.locator("#edit-status")).to_contain_text("Example loaded", timeout=30_000)
            page.locator("#edit-run").click()
            expect(page.locator("#edit-status")).to_contain_text("Done", timeout=300_000)
            expect(page.locator("#metrics-mobilepicasso")).to_contain_text("Latency")
            _no_internals(page)
            _shot(page, "after-run-photo-look", tmp_path)
        finally:
            browser.close()
