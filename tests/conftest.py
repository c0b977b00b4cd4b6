"""Shared test settings: everything runs offline, on the CPU, with small inputs."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import shutil

import pytest

REQUIRE_ALL = os.environ.get("MOBILEPICASSO_REQUIRE_ALL_TESTS") == "1"


@pytest.fixture(scope="session", autouse=True)
def default_items() -> None:
    """study/items/*.jpg (scikit-image's photos, not committed), which tests and CLI examples use."""
    from study.stimuli import ensure_default_items

    ensure_default_items()


def skip_or_fail(reason: str) -> None:
    """Skip locally when an external service is missing; in CI (which installs it) fail instead."""
    if REQUIRE_ALL:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        skip_or_fail("Debian's chromium is not installed")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("MOBILEPICASSO_TEST_PG_URL")
    if not url:
        skip_or_fail("MOBILEPICASSO_TEST_PG_URL is not set")
    return url
