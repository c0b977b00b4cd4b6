"""Helpers for the app tests: the real server (FastAPI + Gradio, as `python app.py` runs it) in a thread."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn

import app

TEST_SIZE = "256"  # long side; small so an end-to-end edit on the mini set takes seconds
TEST_SIZES = app.SIZES + ((f"{TEST_SIZE} px", TEST_SIZE),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(config: app.AppConfig):
    """Yield the base URL of the app served by uvicorn, exactly as `app.main` serves it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app.build_server(config), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def small_config(tmp: Path, **kwargs) -> app.AppConfig:
    kwargs.setdefault("stimuli", None)
    return app.AppConfig(models="mini", cache_dir=tmp / "cache", sizes=TEST_SIZES, default_size=TEST_SIZE, **kwargs)


def input_loaded(page):
    """The input component's "Remove Image" button: there only while it holds an image."""
    return page.locator("#edit-inputs").get_by_role("button", name="Remove Image")


def clear_input(page) -> None:
    """Empty the image component (after an example it shows the image, not the drop zone)."""
    clear = page.locator("#edit-inputs").get_by_role("button", name="Remove Image")
    if clear.count():
        clear.first.click()
    page.locator("#edit-input input[type=file]").wait_for(state="attached", timeout=30_000)
