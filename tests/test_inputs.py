"""Bad inputs give one clear error; odd-but-valid images are converted, not refused."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.inputs import InputError, check_instruction, load_image, parse_size


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text, not a picture")
    with pytest.raises(InputError, match="not an image"):
        load_image(path)


def test_truncated_file():
    data = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png(Image.new("1", (12000, 12000)))  # tiny file, 144 Mpx
    assert len(bomb) < 100_000
    with pytest.raises(InputError, match="too large"):
        load_image(bomb)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="no such image"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(InputError, match="empty"):
        load_image(b"")


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (20, 40)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(_png(rgba)).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "P", "I;16", "1", "LA", "CMYK"])
def test_other_modes_become_rgb(mode):
    image = Image.new("RGB", (16, 16), (10, 200, 30)).convert(mode) if mode != "I;16" else \
        Image.fromarray(np.full((16, 16), 40000, np.uint16))
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (16, 16)
    if mode == "I;16":
        assert out.getpixel((0, 0))[0] == 40000 // 256  # scaled, not clipped to 255


@pytest.mark.parametrize("size", ["10x10", "99999x100", "banana", "0", "4k2"])
def test_impossible_sizes(size):
    with pytest.raises(InputError):
        parse_size(size, (640, 480))


@pytest.mark.parametrize("text", ["", "   ", None, "x" * 301])
def test_bad_instructions(text):
    with pytest.raises(InputError):
        check_instruction(text)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "edit", str(bad), "--instruction", "make it snowy", "--out", str(tmp_path / "o.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.png").exists()
