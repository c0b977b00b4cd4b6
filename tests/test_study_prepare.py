"""prepare: resumable, shardable, blinded files, provenance in the database; the real pipeline."""
from __future__ import annotations

import pytest
from PIL import Image
from sqlalchemy import select

from study.db import Item, Output, make_engine, session_factory
from study.stimuli import prepare, read_items
from test_study_support import ITEMS_CSV, METHOD_WORDS, METHODS, fake_render


def outputs(db: str) -> list[Output]:
    engine = make_engine(db)
    with session_factory(engine)() as session:
        rows = session.scalars(select(Output)).all()
    engine.dispose()
    return rows


def test_prepare_is_resumable_sharded_and_blind(tmp_path):
    items = read_items(ITEMS_CSV)
    assert len(items) >= 4 and all(it.image.is_file() and it.instruction for it in items)
    db, out = str(tmp_path / "study.db"), tmp_path / "stimuli"
    first = prepare(items, METHODS, "96", out, db, render=fake_render, shard=(1, 2), progress=False)
    second = prepare(items, METHODS, "96", out, db, render=fake_render, shard=(2, 2), progress=False)
    per_item = len(METHODS) + 1  # + the broken attention stimulus
    assert first.rendered + second.rendered == len(items) * per_item
    again = prepare(items, METHODS, "96", out, db, render=fake_render, progress=False)
    assert again.rendered == 0 and again.skipped == len(items) * per_item
    rows = outputs(db)
    assert {r.method for r in rows} == {*METHODS, "broken"}
    for row in rows:
        assert not row.failed and row.params_json["seed"] == 0 if row.method != "broken" else True
        path = out / row.path
        assert path.is_file() and path.stem == row.sha256[:32]
        with Image.open(path) as img:
            assert img.format == "PNG" and not img.info and img.size == (row.width, row.height)
        assert all(word not in path.read_bytes().decode("latin-1").lower() for word in METHOD_WORDS)
    assert all(word not in p.name for p in out.rglob("*") for word in METHOD_WORDS)
    sizes = {}
    for row in rows:
        sizes.setdefault(row.item_id, set()).add((row.width, row.height))
    assert all(len(s) == 1 for s in sizes.values())  # both sides of a pair have the same size
    assert len(list((out / "rubric").glob("*.png"))) == 3


def test_failed_render_is_recorded_not_fatal(tmp_path):
    def failing(method, source, instruction, size, seed):
        if method == "ip2p-direct":
            raise ValueError("bad input for this method")
        if method == "tiled-overlap":
            return None, {"failed": True, "failure_reason": "over budget"}
        return fake_render(method, source, instruction, size, seed)

    db = str(tmp_path / "study.db")
    items = read_items(ITEMS_CSV)[:1]
    summary = prepare(items, METHODS, "64", tmp_path / "s", db, render=failing, progress=False)
    assert summary.failed == 2
    failed = {r.method: r.failure_reason for r in outputs(db) if r.failed}
    assert set(failed) == {"ip2p-direct", "tiled-overlap"} and "over budget" in failed["tiled-overlap"]


@pytest.mark.slow
def test_prepare_with_the_real_pipeline(tmp_path):
    try:
        from pipeline import edit  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"pipeline.edit is not importable yet ({exc})")
    from study.stimuli import pipeline_renderer

    db = str(tmp_path / "study.db")
    items = read_items(ITEMS_CSV)[:1]
    summary = prepare(items, ["mobilepicasso"], "64", tmp_path / "s", db, render=pipeline_renderer("mini"),
                      progress=False)
    assert summary.rendered == 2 and summary.failed == 0  # the output and its broken twin
    row = next(r for r in outputs(db) if r.method == "mobilepicasso")
    assert max(row.width, row.height) == 64 and row.params_json
