"""The one place where user inputs are read and validated: images, output sizes, instructions.

Every problem raises `InputError` with a one-line message a user can act on.
"""
from __future__ import annotations

import argparse
import io
import re
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_INPUT_PIXELS = 50_000_000      # ~7000x7000; larger inputs are refused before decoding
MAX_OUTPUT_SIDE = 8192
MIN_OUTPUT_SIDE = 64
MAX_INSTRUCTION_CHARS = 300        # CLIP sees 77 tokens; longer text would be silently cut
SIZE_PRESETS = {"1k": 1024, "2k": 2048, "4k": 3840}


class InputError(ValueError):
    """Bad user input; the message is one sentence meant for the user."""


def load_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """Open an image as 8-bit RGB: EXIF orientation applied, alpha composited on white,
    grayscale / palette / 16-bit converted. Refuses non-images, truncated files and images over
    `MAX_INPUT_PIXELS` (decompression bombs) before decoding their pixels."""
    if isinstance(source, Image.Image):
        image = source
        _check_pixels(image.size)
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"no such image file: {path}")
            data = path.read_bytes()
        else:
            data = bytes(source)
        if not data:
            raise InputError("the image file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(data))
                _check_pixels(image.size)
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise InputError(f"the image is too large (limit {MAX_INPUT_PIXELS:,} pixels)") from None
            except UnidentifiedImageError:
                raise InputError("the file is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
            except (OSError, SyntaxError) as err:
                raise InputError(f"the image file is truncated or corrupt ({err})") from None
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def _check_pixels(size: tuple[int, int]) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise InputError("the image has no pixels")
    if w * h > MAX_INPUT_PIXELS:
        raise InputError(f"the image is too large: {w}x{h} is over the {MAX_INPUT_PIXELS:,}-pixel limit")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")   # 16-bit to 8-bit by scaling, not clipping
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def parse_size(size: str | int | tuple[int, int], input_size: tuple[int, int]) -> tuple[int, int]:
    """Output (width, height): "4k"/"2k"/"1k" or "N" = long side N with the input's aspect ratio,
    "WxH" exact. 4k of a 16:9 input gives 3840x2160."""
    if isinstance(size, tuple):
        w, h = size
    else:
        text = str(size).strip().lower()
        long_side = SIZE_PRESETS.get(text)
        if long_side is None and text.isdigit():
            long_side = int(text)
        if long_side is not None:
            iw, ih = input_size
            scale = long_side / max(iw, ih)
            w, h = (long_side, max(1, round(ih * scale))) if iw >= ih else (max(1, round(iw * scale)), long_side)
        elif m := re.fullmatch(r"(\d+)\s*x\s*(\d+)", text):
            w, h = int(m.group(1)), int(m.group(2))
        else:
            raise InputError(f"size {size!r} is not understood: use 4k, 2k, 1k, a long side like 2048, or WxH")
    if min(w, h) < MIN_OUTPUT_SIDE or max(w, h) > MAX_OUTPUT_SIDE:
        raise InputError(f"size {w}x{h} is impossible here: each side must be {MIN_OUTPUT_SIDE}-{MAX_OUTPUT_SIDE} px")
    return int(w), int(h)


def check_instruction(instruction: str | None) -> str:
    text = " ".join((instruction or "").split())
    if not text:
        raise InputError("the instruction is empty: say what to change, e.g. \"make it snowy\"")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(f"the instruction is too long ({len(text)} characters; the limit is {MAX_INSTRUCTION_CHARS})")
    return text


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30}


def parse_bytes(text: str) -> int:
    """'512MiB', '2GB', '1048576' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (e.g. 512MiB, 2GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
