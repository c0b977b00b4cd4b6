"""Browser test: consent, three trials, a reload that resumes; blinded page; screenshots."""
from __future__ import annotations

import re

import pytest

from study.config import StudyConfig
from study.server import build_app
from study.service import StudyService
from test_study_support import METHOD_WORDS, ThreadServer, prepare_study

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def progress_of(page) -> str:
    return page.locator("#study-progress").inner_text()


@pytest.mark.browser
@pytest.mark.slow
def test_participant_consents_votes_and_resumes(chromium_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)

    db = str(tmp_path / "study.db")
    service = StudyService(db, prepare_study(db, tmp_path / "stimuli", size="256"),
                           StudyConfig(trials_per_participant=8))
    with ThreadServer(build_app(service)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.set_default_timeout(30_000)
        page.goto(f"{server.url}/?pid=BROWSER_P1")
        expect(page.locator("#study-consent")).to_be_visible()
        page.locator("#study-agree input").check()
        page.locator("#study-start").click()
        expect(page.locator("#study-progress")).to_contain_text("Trial 1 of 8")
        expect(page.locator("#study-a img")).to_have_attribute("src", re.compile(r"[0-9a-f]{32}\.png"))
        page.screenshot(path=str(tmp_path / "trial1.png"), full_page=True)
        for k in (1, 2, 3):
            expect(page.locator("#study-progress")).to_contain_text(f"Trial {k} of 8")
            if k == 2:
                page.locator("#study-halluc-b input").check()
            page.locator("#study-vote-a" if k != 3 else "#study-vote-both-good").click()
            expect(page.locator("#study-progress")).to_contain_text(f"Trial {k + 1} of 8")
        html = page.content().lower()
        for word in METHOD_WORDS:
            assert word not in html
        page.reload()
        expect(page.locator("#study-progress")).to_contain_text("Trial 4 of 8")
        expect(page.locator("#study-consent")).to_be_hidden()
        page.screenshot(path=str(tmp_path / "resumed.png"), full_page=True)

        # without ?pid: the generated token in BrowserState resumes the same participant
        page2 = browser.new_page()
        page2.goto(server.url)
        page2.locator("#study-agree input").check()
        page2.locator("#study-start").click()
        expect(page2.locator("#study-progress")).to_contain_text("Trial 1 of 8")
        page2.locator("#study-vote-b").click()
        expect(page2.locator("#study-progress")).to_contain_text("Trial 2 of 8")
        page2.wait_for_timeout(500)
        page2.reload()
        expect(page2.locator("#study-progress")).to_contain_text("Trial 2 of 8")
        browser.close()
    frame = service.participants()
    assert frame.set_index("external_id").loc["BROWSER_P1", "votes"] == 3
    assert (tmp_path / "resumed.png").stat().st_size > 0
    votes = service.exclusions()
    assert votes.votes.sum() == 4
    from sqlalchemy import select

    from study.db import Vote

    with service.ReadSession() as session:  # the browser measured every response time itself
        measured = session.scalars(select(Vote.client_latency_ms)).all()
    assert len(measured) == 4 and all(m is not None and 0 <= m < 600_000 for m in measured)
    service.close()
