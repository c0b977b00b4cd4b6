"""A first edit in a real browser: Debian's Chromium driven by Playwright, selectors are elem_ids."""
from __future__ import annotations

import re

import pytest

from test_app_support import TEST_SIZE, clear_input, input_loaded, running_app, small_config

pytestmark = pytest.mark.browser
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("browser"))
    with running_app(config) as url:
        yield url, config.cache_dir


@pytest.fixture
def app_url(served):
    return served[0]


def test_first_edit_shows_slider_metrics_zoom_and_downloads(served, chromium_path, tmp_path):
    app_url, cache_dir = served
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)  # a busy shared CPU serves the page slowly
            page.goto(app_url, timeout=300_000)
            expect(page.locator("#edit-model-set")).to_contain_text("mini", timeout=60_000)
            expect(page.locator("#tab-edit")).to_be_visible()

            example = sorted((cache_dir / "examples").glob("synthedit-*.png"))[0]  # written at startup
            clear_input(page)  # the first example is preloaded
            page.locator("#edit-input input[type=file]").set_input_files(str(example))
            expect(input_loaded(page)).to_be_visible(timeout=30_000)
            page.locator("#edit-instruction textarea").fill("make the circle green")
            page.locator("#edit-methods label", has_text="ip2p-bicubic").click()
            page.locator("#edit-size label", has_text=f"{TEST_SIZE} px").click()
            page.locator("#edit-run").click()

            for method in ("mobilepicasso", "ip2p-bicubic"):
                metrics = page.locator(f"#metrics-{method}")
                expect(metrics).to_contain_text("Latency", timeout=120_000)
                for label in ("Peak memory", "U-Net evaluations", "Tiles", "Output"):
                    expect(metrics).to_contain_text(label)
                expect(page.locator(f"#download-{method}")).to_be_visible()
                expect(page.locator(f"#zoom-{method} img")).to_be_visible()
            expect(page.locator("#edit-status")).to_contain_text("2 of 2 methods")
            expect(page.locator("#edit-slider img")).to_have_count(2)
            expect(page.locator("#edit-slider-method")).to_be_visible()
            assert re.search(r"Tiles\W+(\d+|none)", page.locator("#metrics-mobilepicasso").inner_text())

            before = page.locator("#edit-zoom-caption").inner_text()
            preview = page.locator("#preview-ip2p-bicubic img")
            box = preview.bounding_box()
            preview.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
            expect(page.locator("#edit-zoom-x input[type=number]")).not_to_have_value("50", timeout=30_000)
            assert "pixels" in before
            page.screenshot(path=str(tmp_path / "first-edit.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "first-edit.png").stat().st_size > 10_000


def test_missing_input_shows_a_message_not_a_trace(app_url, chromium_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)  # a busy shared CPU serves the page slowly
            page.goto(app_url, timeout=300_000)
            page.locator("#edit-instruction textarea").fill("", timeout=60_000)
            page.locator("#edit-run").click()
            expect(page.locator("#edit-status")).to_contain_text("The instruction is empty", timeout=30_000)
            clear_input(page)
            page.locator("#edit-instruction textarea").fill("make the circle green")
            page.locator("#edit-run").click()
            expect(page.locator("#edit-status")).to_contain_text("Upload an image or pick an example first.",
                                                                 timeout=30_000)
            expect(page.locator("#edit-status")).not_to_contain_text("instruction is empty")
            expect(page.get_by_text("Traceback")).to_have_count(0)
        finally:
            browser.close()
