"""`prepare`: render every method on every item into blinded, content-hash-named PNG stimuli.

Blinding (reference notes A.9.6): files are named by the SHA-256 of their own bytes, re-encoded
from raw pixels so no text chunk, EXIF or ICC profile survives, and the method, parameters, seed
and timings go only into the database (``outputs``). The bytes a participant receives carry no
information about the method either: every stimulus of an item (all methods and the attention
stimulus) is padded to one common byte size (``encode_png(image, size=...)``: empty deflate blocks
inside the image data, so the file holds only IHDR/IDAT/IEND chunks) and every file gets the same
modification time (``STIMULUS_MTIME``), so ``Content-Length``, ``Last-Modified`` and ``ETag`` are
equal within an item. Outputs of different methods with identical pixels are detected and
reported (``PrepareSummary.identical``); the schedule never pairs them. The run is resumable (an
output already in the database with its file present is skipped) and shardable (``shard=(k, n)``
takes every n-th item, so an item's attention stimulus is made next to its outputs).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageFilter
from sqlalchemy import select
from tqdm import tqdm

from study.db import BROKEN_METHOD, Item, Output, init_db, make_engine, session_factory, utcnow

Renderer = Callable[[str, Image.Image, str, str, int], tuple[Image.Image, dict]]

DEFAULT_METHODS = ("mobilepicasso", "ip2p-direct", "ip2p-realesrgan", "tiled-overlap")
RUBRIC_EXAMPLES = (
    ("duplicated", "Duplicated or floating object: a part of the scene appears twice or hangs in the air."),
    ("distorted", "Distortion: shapes, faces or straight lines warped in a way the instruction did not ask for."),
    ("garbled", "Garbled detail: texture or text that dissolves into noise or meaningless patterns."),
)


@dataclass(frozen=True)
class ItemSpec:
    item_id: str
    image: Path
    instruction: str


DEFAULT_ITEMS_CSV = Path(__file__).resolve().parent / "items.csv"


def read_items(path: str | Path) -> list[ItemSpec]:
    """Items CSV (``item_id, image, instruction``); image paths are relative to the CSV. The default
    items' photos are not in the repository (scikit-image ships them): they are written on first use."""
    path = Path(path)
    if path.resolve() == DEFAULT_ITEMS_CSV:
        ensure_default_items()
    with path.open(newline="") as handle:
        return [ItemSpec(row["item_id"].strip(), (path.parent / row["image"].strip()).resolve(),
                         row["instruction"].strip()) for row in csv.DictReader(handle)]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STIMULUS_MTIME = 946684800  # 2000-01-01T00:00:00Z on every stimulus file: no render order in headers
_PNG_OVERHEAD = len(PNG_SIGNATURE) + 25 + 12  # signature, IHDR chunk, IEND chunk
_EMPTY_BLOCK = b"\x00\x00\x00\xff\xff"       # a non-final stored deflate block of length 0
_FINAL_BLOCK = b"\x01\x00\x00\xff\xff"       # the final stored deflate block of length 0
_MAX_IDAT_CHUNKS = 5  # 12 bytes per chunk: 1..5 chunks reach every residue of the 5-byte blocks


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _filtered_scanlines(rgb: Image.Image) -> bytes:
    """The PNG filtered scanlines of ``rgb`` (Pillow's adaptive filters), i.e. the IDAT payload
    before compression."""
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG", compress_level=1)
    data, pos, idat = buffer.getvalue(), 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return zlib.decompress(b"".join(idat))


@dataclass(frozen=True)
class EncodedPNG:
    """A PNG split into its fixed parts, so it can be written at any size >= ``min_size``."""

    width: int
    height: int
    deflate: bytes  # zlib header + compressed scanlines, ending byte-aligned (sync flush)
    adler: int

    @property
    def min_size(self) -> int:
        return _PNG_OVERHEAD + len(self.deflate) + len(_FINAL_BLOCK) + 4 + 12

    def to_bytes(self, size: int | None = None) -> bytes:
        """The PNG, exactly ``size`` bytes long when given (``size >= min_size + 60`` always works):
        empty stored deflate blocks (5 bytes each) and extra IDAT chunks (12 bytes each) make up
        the difference; decoders see the same pixels."""
        base = _PNG_OVERHEAD + len(self.deflate) + len(_FINAL_BLOCK) + 4
        size = size if size is not None else base + 12
        for n_chunks in range(1, _MAX_IDAT_CHUNKS + 1):
            extra = size - base - 12 * n_chunks
            if extra >= 0 and extra % len(_EMPTY_BLOCK) == 0:
                break
        else:
            raise ValueError(f"cannot write a {self.width}x{self.height} PNG of {size} bytes "
                             f"(at least {self.min_size + 60} always works)")
        stream = (self.deflate + _EMPTY_BLOCK * (extra // len(_EMPTY_BLOCK)) + _FINAL_BLOCK
                  + struct.pack(">I", self.adler))
        cut = [round(i * len(stream) / n_chunks) for i in range(n_chunks + 1)]
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        out = (PNG_SIGNATURE + _chunk(b"IHDR", ihdr)
               + b"".join(_chunk(b"IDAT", stream[a:b]) for a, b in zip(cut, cut[1:]))
               + _chunk(b"IEND", b""))
        assert len(out) == size
        return out


def encode_png(image: Image.Image) -> EncodedPNG:
    """Encode the pixels only (rebuilt from raw RGB: no metadata chunk can be copied)."""
    rgb = image.convert("RGB")
    bare = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    raw = _filtered_scanlines(bare)
    compressor = zlib.compressobj(6)
    deflate = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return EncodedPNG(bare.width, bare.height, deflate, zlib.adler32(raw))


def fixed_size_bound(width: int, height: int) -> int:
    """A byte size every ``width`` x ``height`` RGB PNG from ``encode_png`` fits in (deflate's
    worst-case expansion of the raw scanlines): one size for all images of these dimensions."""
    raw = height * (1 + 3 * width)
    bound = raw + (raw >> 12) + (raw >> 14) + (raw >> 25) + 13 + 5  # zlib's compressBound + flush
    return _PNG_OVERHEAD + bound + len(_FINAL_BLOCK) + 4 + 12 + 60


def pixels_sha256(image: Image.Image) -> str:
    """Identity of the pixels (size and RGB values), independent of the encoding."""
    rgb = image.convert("RGB")
    return hashlib.sha256(struct.pack(">II", *rgb.size) + rgb.tobytes()).hexdigest()


def clean_png_bytes(image: Image.Image) -> bytes:
    """PNG of the pixels only, at its natural (smallest) size."""
    return encode_png(image).to_bytes()


def write_stimulus(data: bytes, directory: Path) -> tuple[str, str]:
    """Write PNG bytes under their content hash with the fixed mtime; returns (file name, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{digest[:32]}.png"
    target = directory / name
    if not target.exists():
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(target)
    os.utime(target, (STIMULUS_MTIME, STIMULUS_MTIME))
    return name, digest


def store_png(image: Image.Image, directory: Path) -> tuple[str, str]:
    """Write the image under its content hash; returns (file name, sha256)."""
    return write_stimulus(clean_png_bytes(image), directory)


def broken_version(image: Image.Image, seed: int = 0) -> Image.Image:
    """An obviously broken output for attention checks: downscaled x24, blown up blocky, blurred.
    (No added noise: noise made it the one file of its item that compressed badly; stimulus sizes
    are padded to one per item anyway.) ``seed`` is kept for the recorded recipe's signature."""
    w, h = image.size
    blocks = image.convert("RGB").resize((max(1, w // 24), max(1, h // 24)), Image.Resampling.BILINEAR)
    return blocks.resize((w, h), Image.Resampling.NEAREST).filter(ImageFilter.GaussianBlur(radius=max(2, w // 128)))


def rubric_example(image: Image.Image, kind: str) -> Image.Image:
    """Synthetic illustrations of the hallucination rubric, made from a source photo."""
    img = image.convert("RGB")
    w, h = img.size
    if kind == "duplicated":
        patch = img.crop((w // 3, h // 3, w // 3 + w // 4, h // 3 + h // 4))
        out = img.copy()
        out.paste(patch, (w // 16, h // 16))
        return out
    if kind == "distorted":
        from skimage.transform import swirl

        arr = swirl(np.asarray(img), center=(w / 2, h / 2), strength=4, radius=min(w, h) / 2)
        return Image.fromarray((arr * 255).astype(np.uint8))
    if kind == "garbled":
        arr = np.asarray(img).copy()
        rng = np.random.default_rng(0)
        y0, x0, size = h // 3, w // 3, min(w, h) // 3
        tile = 8
        region = arr[y0:y0 + size, x0:x0 + size]
        cells = [region[i:i + tile, j:j + tile].copy() for i in range(0, size - tile + 1, tile)
                 for j in range(0, size - tile + 1, tile)]
        order = rng.permutation(len(cells))
        k = 0
        for i in range(0, size - tile + 1, tile):
            for j in range(0, size - tile + 1, tile):
                region[i:i + tile, j:j + tile] = cells[order[k]]
                k += 1
        return Image.fromarray(arr)
    raise ValueError(f"unknown rubric example {kind!r}")


def pipeline_renderer(models: str = "mini") -> Renderer:
    """The default renderer: the project's ``pipeline.edit``."""

    def render(method: str, source: Image.Image, instruction: str, size: str, seed: int):
        from pipeline import edit

        result = edit(source, instruction, method=method, size=size, models=models, seed=seed)
        report = result.report.to_dict() if hasattr(result.report, "to_dict") else dict(result.report)
        return result.image, report

    return render


def dry_run_renderer(method: str, source: Image.Image, instruction: str, size: str, seed: int):
    """Placeholder stimuli for rehearsing the harness (load tests) without the pipeline: the
    source at the requested long side with a per-method tint; recorded as ``renderer=dry-run``."""
    image = source.convert("RGB")
    long_side = int(size) if str(size).isdigit() else 512
    scale = long_side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    tint = np.array([hashlib.sha256(f"{method}{c}".encode()).digest()[0] % 40 for c in "rgb"])
    arr = np.clip(np.asarray(image, dtype=np.int16) + tint, 0, 255).astype(np.uint8)
    return Image.fromarray(arr), {"renderer": "dry-run", "seed": seed, "size": str(size)}


def parse_shard(text: str | None) -> tuple[int, int]:
    """"k/n" (1-based) -> (k, n)."""
    if not text:
        return 1, 1
    k, n = (int(x) for x in text.split("/"))
    if not 1 <= k <= n:
        raise ValueError(f"shard must be k/n with 1 <= k <= n, got {text!r}")
    return k, n


@dataclass
class PrepareSummary:
    rendered: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    identical: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (item, methods)


def prepare(items: Iterable[ItemSpec], methods: Iterable[str], size: str, out_dir: str | Path,
            db_url: str | Path, render: Renderer | None = None, seed: int = 0,
            shard: tuple[int, int] = (1, 1), progress: bool = True) -> PrepareSummary:
    """Render ``methods`` x ``items`` (this shard) plus one broken stimulus per item."""
    render = render or pipeline_renderer()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db_url)
    init_db(engine)
    Session = session_factory(engine)
    methods = list(dict.fromkeys(methods))
    k, n = shard
    items = [it for idx, it in enumerate(items) if idx % n == k - 1]
    summary = PrepareSummary()
    started = time.perf_counter()
    jobs = [(it, m) for it in items for m in [*methods, BROKEN_METHOD]]
    try:
        with tqdm(jobs, desc=f"prepare {k}/{n}", unit="output", disable=not progress) as bar:
            for spec, method in bar:
                bar.set_postfix_str(spec.item_id)
                source = Image.open(spec.image)
                source.load()
                item = _ensure_item(Session, spec, source, out_dir)
                if _done(Session, item.id, method, out_dir):
                    summary.skipped += 1
                else:
                    _render_one(Session, spec, source, method, size, seed, out_dir, render, summary)
                if method == BROKEN_METHOD:  # the item's last job: equal sizes, identical outputs
                    summary.identical += equalize_item(Session, spec.item_id, out_dir)
        if items:
            _write_rubric(Image.open(items[0].image), out_dir)
    finally:
        engine.dispose()
    summary.seconds = time.perf_counter() - started
    return summary


def _ensure_item(Session, spec: ItemSpec, source: Image.Image, out_dir: Path) -> Item:
    name, _ = store_png(source, out_dir)
    with Session.begin() as session:
        item = session.get(Item, spec.item_id)
        if item is None:
            item = Item(id=spec.item_id, source_path=name, instruction=spec.instruction,
                        width=source.width, height=source.height)
            session.add(item)
        else:
            item.source_path, item.instruction = name, spec.instruction
        return item


def _done(Session, item_id: str, method: str, out_dir: Path) -> bool:
    with Session() as session:
        out = session.scalars(select(Output).where(Output.item_id == item_id, Output.method == method)).first()
        return out is not None and (out.failed or (out.path is not None and (out_dir / out.path).is_file()))


def _render_one(Session, spec, source, method, size, seed, out_dir, render, summary) -> None:
    t0 = time.perf_counter()
    params: dict = {}
    failure = None
    image = None
    if method == BROKEN_METHOD:
        with Session() as session:
            good = session.scalars(select(Output).where(
                Output.item_id == spec.item_id, Output.method != BROKEN_METHOD,
                Output.failed.is_(False)).order_by(Output.id)).first()
        if good is None:
            failure = "no intact output to break"
        else:
            image = broken_version(Image.open(out_dir / good.path), seed=seed)
            params = {"derived_from_output": good.id, "recipe": "downscale/24 nearest + blur"}
    else:
        try:
            image, params = render(method, source, spec.instruction, size, seed)
            if params.get("failed"):
                failure, image = str(params.get("failure_reason") or "failed"), None
        except ValueError as exc:  # pipeline.InputError and friends: a bad item, recorded
            failure = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - t0
    values = dict(item_id=spec.item_id, method=method, size=str(size), seed=seed,
                  params_json={**params, "prepare_seconds": round(elapsed, 3)}, created_at=utcnow())
    if image is not None:
        reference = _reference_size(Session, spec.item_id)
        if reference and image.size != reference:  # same size on both sides of every pair
            values["params_json"]["resized_from"] = list(image.size)
            image = image.resize(reference, Image.Resampling.LANCZOS)
        name, digest = store_png(image, out_dir)
        values.update(path=name, sha256=digest, width=image.width, height=image.height, failed=False)
        summary.rendered += 1
    else:
        values.update(failed=True, failure_reason=failure)
        summary.failed += 1
    with Session.begin() as session:
        existing = session.scalars(select(Output).where(Output.item_id == spec.item_id,
                                                        Output.method == method)).first()
        if existing is None:
            session.add(Output(**values))
        else:
            for key, value in values.items():
                setattr(existing, key, value)


def _reference_size(Session, item_id: str) -> tuple[int, int] | None:
    with Session() as session:
        out = session.scalars(select(Output).where(Output.item_id == item_id, Output.failed.is_(False),
                                                   Output.width.is_not(None)).order_by(Output.id)).first()
        return (out.width, out.height) if out else None


def equalize_item(Session, item_id: str, out_dir: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Pad every stimulus of the item to one byte size and report outputs with identical pixels.

    The common size is the largest natural PNG size among the item's outputs plus a margin that
    makes every size reachable; files are rewritten under their new content hash (superseded
    files removed) and the pixel hash is recorded as ``params_json["pixels_sha256"]``. Idempotent:
    a re-run finds every file already at the common size. Returns ``[(item, methods)]`` for each
    group of two or more (non-attention) methods whose outputs have identical pixels; the
    schedule never pairs outputs whose files are identical.
    """
    with Session() as session:
        rows = session.scalars(select(Output).where(
            Output.item_id == item_id, Output.failed.is_(False), Output.path.is_not(None))
            .order_by(Output.id)).all()
    rows = [r for r in rows if (out_dir / r.path).is_file()]
    encoded, pixels = {}, {}
    for row in rows:
        with Image.open(out_dir / row.path) as img:
            img.load()
            encoded[row.id] = encode_png(img)
            pixels[row.id] = pixels_sha256(img)
    if not rows:
        return []
    target = max(e.min_size for e in encoded.values()) + 60
    superseded = set()
    with Session.begin() as session:
        for row in rows:
            name, digest = write_stimulus(encoded[row.id].to_bytes(target), out_dir)
            current = session.get(Output, row.id)
            if current.path != name:
                superseded.add(current.path)
            current.path, current.sha256 = name, digest
            current.params_json = {**current.params_json, "pixels_sha256": pixels[row.id],
                                   "file_bytes": target}
        session.flush()
        in_use = set(session.scalars(select(Output.path).where(Output.path.is_not(None))))
        in_use |= set(session.scalars(select(Item.source_path)))
    for name in superseded - in_use:
        (out_dir / name).unlink(missing_ok=True)
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.method != BROKEN_METHOD:
            groups.setdefault(pixels[row.id], []).append(row.method)
    return [(item_id, tuple(sorted(methods))) for methods in groups.values() if len(methods) > 1]


def _write_rubric(source: Image.Image, out_dir: Path) -> None:
    rubric = out_dir / "rubric"
    rubric.mkdir(exist_ok=True)
    small = source.convert("RGB")
    small.thumbnail((384, 384))
    for name, _ in RUBRIC_EXAMPLES:
        target = rubric / f"{name}.png"
        if not target.exists():
            target.write_bytes(clean_png_bytes(rubric_example(small, name)))


# -- the default items shipped with the repository ---------------------------------------
DEFAULT_ITEMS = (
    ("astronaut", "astronaut", "Put a red knitted scarf around the astronaut's neck"),
    ("cat", "chelsea", "Turn the cat's fur black and white"),
    ("coffee", "coffee", "Replace the coffee with a cup of green tea"),
    ("rocket", "rocket", "Make it a night launch with a starry sky"),
    ("hubble", "hubble_deep_field", "Add a bright comet crossing the sky"),
    ("motorcycle", "stereo_motorcycle", "Paint the motorcycle bright blue"),
)


def write_default_items(directory: str | Path, long_side: int = 384) -> Path:
    """Write ``items.csv`` and ``items/*.jpg`` from scikit-image's bundled photos (reproducible)."""
    import skimage.data

    directory = Path(directory)
    (directory / "items").mkdir(parents=True, exist_ok=True)
    rows = []
    for item_id, loader, instruction in DEFAULT_ITEMS:
        data = getattr(skimage.data, loader)()
        if isinstance(data, tuple):  # stereo pairs: take the left view
            data = data[0]
        image = Image.fromarray(np.asarray(data)).convert("RGB")
        image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        rel = f"items/{item_id}.jpg"
        image.save(directory / rel, format="JPEG", quality=90)
        rows.append({"item_id": item_id, "image": rel, "instruction": instruction})
    csv_path = directory / "items.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["item_id", "image", "instruction"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def ensure_default_items() -> Path:
    """`study/items/*.jpg` from scikit-image's photos, written once (they are not committed)."""
    with DEFAULT_ITEMS_CSV.open(newline="") as handle:
        images = [DEFAULT_ITEMS_CSV.parent / row["image"] for row in csv.DictReader(handle)]
    if not all(image.is_file() for image in images):
        write_default_items(DEFAULT_ITEMS_CSV.parent)
    return DEFAULT_ITEMS_CSV


if __name__ == "__main__":
    print(write_default_items(Path(__file__).parent))
