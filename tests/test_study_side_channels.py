"""Nothing a participant receives tells the methods apart or shows which side is the attention
check: a classifier trained on every byte count, header and timing is at chance. And outputs of
two methods with identical pixels are reported and never shown as a pair."""
from __future__ import annotations

import email.utils
import time
import zlib
from collections import defaultdict

import httpx
import numpy as np
import pytest
from PIL import Image, ImageFilter
from sqlalchemy import select

from study.config import StudyConfig
from study.db import Output, Trial
from study.server import build_app
from study.service import StudyService, TrialView
from study.stimuli import encode_png, fixed_size_bound, prepare, read_items
from study.ui import zoom_crops
from test_study_support import ITEMS_CSV, METHODS, ThreadServer, db_url, fake_render  # noqa: F401

BLUR = {m: r for m, r in zip(METHODS, (0, 1.5, 3, 6))}  # method-specific smoothness, as real methods differ


def blurry_render(method, source, instruction, size, seed):
    """Test double whose outputs compress differently per method (like bicubic vs a sharp SR)."""
    image, report = fake_render(method, source, instruction, size, seed)
    return image.filter(ImageFilter.GaussianBlur(BLUR[method])) if BLUR[method] else image, report


def features(response: httpx.Response, seconds: float) -> list[float]:
    """Everything about a file response except its pixels: size, dates, ETag, cache headers, time."""
    h = response.headers
    modified = h.get("last-modified")
    return [len(response.content), float(h.get("content-length", -1)),
            email.utils.parsedate_to_datetime(modified).timestamp() if modified else 0.0,
            float(zlib.crc32(h.get("etag", "").encode())), float(zlib.crc32(h.get("cache-control", "").encode())),
            float(len(h)), seconds]


def stump_accuracy(x_train, y_train, x_test, y_test) -> float:
    """The best single-feature threshold rule on the training half, scored on the test half."""
    best, best_acc = (0, 0.0, True), -1.0
    for j in range(x_train.shape[1]):
        for t in np.unique(x_train[:, j]):
            for above in (True, False):
                acc = np.mean((x_train[:, j] > t if above else x_train[:, j] <= t) == y_train)
                if acc > best_acc:
                    best, best_acc = (j, t, above), acc
    j, t, above = best
    return float(np.mean((x_test[:, j] > t if above else x_test[:, j] <= t) == y_test))


def logistic_accuracy(x_train, y_train, x_test, y_test, steps=2000, lr=0.1) -> float:
    mu, sd = x_train.mean(0), x_train.std(0)
    sd[sd == 0] = 1
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    w, c = np.zeros(a.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a @ w + c)))
        w -= lr * (a.T @ (p - y_train) / len(a) + 1e-3 * w)
        c -= lr * np.mean(p - y_train)
    return float(np.mean(((b @ w + c) > 0) == y_test))


def chance_bound(p: float, n: int) -> float:
    return p + 3 * np.sqrt(p * (1 - p) / n)


@pytest.mark.slow
def test_a_classifier_on_everything_a_participant_receives_is_at_chance(db_url, tmp_path):
    stimuli = tmp_path / "stimuli"
    prepare(read_items(ITEMS_CSV), METHODS, "96", stimuli, db_url, render=blurry_render, progress=False)
    service = StudyService(db_url, stimuli, StudyConfig(trials_per_participant=12, new_participants_burst=0))
    method_of = {o.path: o.method for o in service.catalog.by_id.values()}
    per_file: dict[str, list[list[float]]] = defaultdict(list)
    attention = []  # (participant, left features, right features, broken is left)
    with ThreadServer(build_app(service)) as server:
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=60)

        def fetch(url: str) -> list[float]:
            """The file as this trial's participant gets it, from the JSON flow's route and the Gradio
            flow's, each timed on this fetch (a timing kept from a file's first fetch in the whole
            run measured when the file first came up, i.e. the server's warm-up, not the file)."""
            started = time.perf_counter()
            response = client.get(url)
            response.raise_for_status()
            f = features(response, time.perf_counter() - started)
            name = url.rsplit("/", 1)[-1]
            started = time.perf_counter()
            g = client.get(f"/gradio_api/file={service.stimuli_dir / name}")
            g.raise_for_status()
            f += features(g, time.perf_counter() - started)
            per_file[name].append(f)
            return f

        for p in range(24):
            pid = f"probe{p:02d}"
            client.post("/study/api/session", json={"pid": pid}).raise_for_status()
            view = client.post("/study/api/consent", json={"participant": pid}).json()
            while view["status"] == "trial":
                left, right = fetch(view["left"]), fetch(view["right"])
                lname, rname = view["left"].rsplit("/", 1)[-1], view["right"].rsplit("/", 1)[-1]
                if "broken" in (method_of[lname], method_of[rname]):
                    attention.append((p, left, right, method_of[lname] == "broken"))
                    crops = zoom_crops(service, TrialView(**{**view, "left": lname, "right": rname}), 30, 60)
                    with Image.open(service.stimuli_dir / lname) as img:
                        side = min(service.config.zoom_window, *img.size)
                    sizes = [len(open(c, "rb").read()) for c in crops]
                    assert sizes[0] == sizes[1] == fixed_size_bound(side, side)
                view = client.post("/study/api/vote", json={
                    "participant": pid, "trial_id": view["trial_id"], "choice": "left"}).json()["next"]
    service.close()

    # 1. which side is the attention check's broken image, from left-minus-right features
    assert len(attention) >= 100
    x = np.array([np.subtract(l, r) for _, l, r, _ in attention])
    y = np.array([broken_left for *_, broken_left in attention])
    train = np.array([p < 12 for p, *_ in attention])
    n_test = int((~train).sum())
    for accuracy in (stump_accuracy(x[train], y[train], x[~train], y[~train]),
                     logistic_accuracy(x[train], y[train], x[~train], y[~train])):
        assert accuracy <= chance_bound(0.5, n_test), f"attention side predicted with {accuracy:.2f}"

    # 2. which method made a file, from its features ranked within its item, leaving one item out
    by_item = defaultdict(list)
    for out in service.catalog.by_id.values():
        if out.method != "broken" and out.path in per_file:
            by_item[out.item_id].append((out.method, np.median(per_file[out.path], axis=0)))
    hits = total = 0
    for held_out in by_item:
        def ranks(rows):
            values = np.array([f for _, f in rows])
            return np.array([[np.sum(col < v) + 0.5 * (np.sum(col == v) - 1) for v in col] for col in values.T]).T
        votes = defaultdict(lambda: defaultdict(int))  # (feature, rank) -> method -> count
        for item, rows in by_item.items():
            if item != held_out:
                for (method, _), r in zip(rows, ranks(rows)):
                    for j, rank in enumerate(r):
                        votes[(j, rank)][method] += 1
        train_acc = []
        for j in range(len(by_item[held_out][0][1])):  # pick the feature that fits the training items best
            correct = sum(max(votes[(j, rank)].values()) for (jj, rank) in votes if jj == j)
            train_acc.append(correct)
        j = int(np.argmax(train_acc))
        for (method, _), r in zip(by_item[held_out], ranks(by_item[held_out])):
            guess = votes.get((j, r[j]))
            hits += bool(guess) and max(guess, key=guess.get) == method
            total += 1
    accuracy = hits / total
    assert accuracy <= chance_bound(0.25, total), f"method predicted with {accuracy:.2f} from file features"


def test_every_stimulus_of_an_item_has_one_size_and_one_date(tmp_path):
    db, out = str(tmp_path / "study.db"), tmp_path / "stimuli"
    prepare(read_items(ITEMS_CSV), METHODS, "96", out, db, render=blurry_render, progress=False)
    service = StudyService(db, out)
    try:
        by_item = defaultdict(set)
        for o in service.catalog.by_id.values():
            stat = (out / o.path).stat()
            by_item[o.item_id].add((stat.st_size, stat.st_mtime))
            with Image.open(out / o.path) as img:
                assert img.format == "PNG" and not img.info
        assert all(len(v) == 1 for v in by_item.values()), by_item
    finally:
        service.close()
    again = prepare(read_items(ITEMS_CSV), METHODS, "96", out, db, render=blurry_render, progress=False)
    assert again.rendered == 0  # resumable: the padded files count as done


def test_padded_png_decodes_to_the_same_pixels_at_any_reachable_size():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    encoded = encode_png(image)
    for extra in range(60, 80):
        size = encoded.min_size + extra
        data = encoded.to_bytes(size)
        assert len(data) == size
        from io import BytesIO

        with Image.open(BytesIO(data)) as decoded:
            assert np.array_equal(np.asarray(decoded), np.asarray(image))
    assert encoded.to_bytes(fixed_size_bound(53, 37))  # the fixed bound is always reachable


def test_identical_outputs_are_reported_and_never_paired(db_url, tmp_path):
    def twin_render(method, source, instruction, size, seed):  # two methods give the same pixels
        return fake_render("mobilepicasso" if method == "tiled-overlap" else method, source,
                           instruction, size, seed)

    stimuli = tmp_path / "stimuli"
    summary = prepare(read_items(ITEMS_CSV), METHODS, "96", stimuli, db_url, render=twin_render, progress=False)
    items = [it.item_id for it in read_items(ITEMS_CSV)]
    assert sorted(summary.identical) == sorted((i, ("mobilepicasso", "tiled-overlap")) for i in items)
    service = StudyService(db_url, stimuli, StudyConfig(trials_per_participant=20, new_participants_burst=0))
    try:
        assert len(service.catalog.cells) == 5 * len(items)
        assert sorted(service.identical_pairs().itertuples(index=False, name=None)) == sorted(
            (i, "mobilepicasso|tiled-overlap") for i in items)
        for p in range(6):
            view = service.consent(service.join(f"twin{p}"))
            while view.status == "trial":
                assert view.left != view.right
                view = service.vote(f"twin{p}", view.trial_id, "right").next
        with service.ReadSession() as session:
            path = {o.id: o.path for o in session.scalars(select(Output))}
            trials = session.scalars(select(Trial)).all()
        assert trials and all(path[t.left_output_id] != path[t.right_output_id] for t in trials)
        assert not any(t.pair == "mobilepicasso|tiled-overlap" for t in trials)
    finally:
        service.close()
