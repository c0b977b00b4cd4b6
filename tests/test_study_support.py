"""Shared helpers for the study tests: a test-double renderer, prepared studies, servers.

``fake_render`` is a TEST DOUBLE for ``pipeline.edit``: a colour-shifted, downscaled copy of
the source, deterministic per method, so schedule/DB/HTTP tests run in seconds on a CPU.
"""
from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.stimuli import prepare, read_items

ITEMS_CSV = Path(__file__).resolve().parents[1] / "study" / "items.csv"
METHODS = ["mobilepicasso", "ip2p-direct", "ip2p-realesrgan", "tiled-overlap"]
METHOD_WORDS = ["mobilepicasso", "ip2p", "realesrgan", "tiled", "broken", "patchwise", "bicubic"]


def fake_render(method: str, source: Image.Image, instruction: str, size: str, seed: int):
    """Test double: colour-shifted copy at long side ``size``, with a metadata-laden report."""
    image = source.convert("RGB")
    image.thumbnail((int(size), int(size)))
    shift = sum(map(ord, method)) % 60
    arr = np.clip(np.asarray(image).astype(int) + shift, 0, 255).astype(np.uint8)
    out = Image.fromarray(arr)
    out.info["parameters"] = f"method={method}"  # must not survive into the stimulus file
    return out, {"method": method, "seed": seed, "timings": {"total_s": 0.0}}


def prepare_study(db_url: str, stimuli: Path, size: str = "96") -> Path:
    prepare(read_items(ITEMS_CSV), METHODS, size, stimuli, db_url, render=fake_render, progress=False)
    return stimuli


def pg_schema_url(base_url: str):
    """A fresh schema in the test database (tests running in parallel never collide)."""
    from sqlalchemy import create_engine, text

    schema = f"study_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}options=-csearch_path%3D{schema}"

    def drop():
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    return url, drop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """uvicorn in a background thread, bound to 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", limit_concurrency=200))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """The study database on SQLite (a file in tmp_path) and on PostgreSQL (a fresh schema)."""
    if request.param == "sqlite":
        yield str(tmp_path / "study.db")
        return
    base = request.getfixturevalue("postgres_url")
    url, drop = pg_schema_url(base)
    yield url
    drop()


def test_fake_render_is_deterministic_and_method_specific():
    src = Image.new("RGB", (200, 100), (10, 20, 30))
    a1, _ = fake_render("mobilepicasso", src, "x", "64", 0)
    a2, _ = fake_render("mobilepicasso", src, "x", "64", 0)
    b, _ = fake_render("ip2p-direct", src, "x", "64", 0)
    assert a1.size == (64, 32) and a1.tobytes() == a2.tobytes() != b.tobytes()
