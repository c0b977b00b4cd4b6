"""What a run costs and how to keep it inside a budget: one module for estimating and measuring.

- `estimate_direct_edit`: FLOPs of editing at the target size directly (exact, on the meta device)
  and the time it would take at this machine's measured U-Net throughput;
- `measure_tile_costs` / `measure_decode_costs`: latency and peak memory of one SR U-Net / decoder
  window per window size, measured here and cached per process;
- `plan_memory`: the SR and decode windows and batches for which a whole run (frame buffers and
  decode included) stays inside `--memory-budget`.

Memory is what the run allocates on top of what is resident when it starts (weights, runtime): on
the CPU the rise of the process peak RSS, on CUDA the rise of `torch.cuda.max_memory_allocated`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.report import current_memory_bytes, peak_memory_bytes, reset_peak_memory
from pipeline.tiling import TileCost

class OverBudget(RuntimeError):
    """The method would exceed the time or memory budget; reported, not raised to the user."""


_THROUGHPUT: dict[tuple, float] = {}


def estimate_direct_edit(models, size: tuple[int, int], steps: int, text_guidance: float, image_guidance: float) -> dict:
    """FLOPs of editing at `size` (w, h) directly, counted exactly on a meta-device copy of the
    edit U-Net (no memory, no compute), and the time it would take at this machine's measured
    U-Net throughput (one real pass at the standard size)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.report import FLOP_FORMULAS
    from pipeline.stages.edit import uses_cfg

    unet = models.edit_pipeline.unet
    f = models.info.latent_factor
    batch = 3 if uses_cfg(text_guidance, image_guidance) else 1
    ctx = models.edit_pipeline.text_encoder.config.hidden_size

    def flops(h: int, w: int, device: torch.device | str, module: torch.nn.Module) -> float:
        dtype = next(module.parameters()).dtype
        x = torch.zeros(1, unet.config.in_channels, h, w, device=device, dtype=dtype)
        e = torch.zeros(1, 77, ctx, device=device, dtype=dtype)
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter, torch.no_grad():
            module(x, 999, encoder_hidden_states=e)
        return float(counter.get_total_flops())

    key = (id(unet), unet.device, unet.dtype)
    if key not in _THROUGHPUT:
        n = models.info.edit_resolution // f
        per_pass = flops(n, n, unet.device, unet)  # also the warm-up: a process's first pass carries one-time setup
        seconds = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            with torch.no_grad():
                unet(torch.zeros(1, unet.config.in_channels, n, n, device=unet.device, dtype=unet.dtype), 999,
                     encoder_hidden_states=torch.zeros(1, 77, ctx, device=unet.device, dtype=unet.dtype))
            if unet.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = min(seconds, time.perf_counter() - t0)
        _THROUGHPUT[key] = per_pass / max(seconds, 1e-6)
    with torch.device("meta"):
        meta_unet = type(unet).from_config(unet.config)
    total = flops(size[1] // f, size[0] // f, "meta", meta_unet) * batch * steps
    return {"tflops": total / 1e12, "seconds": total / _THROUGHPUT[key], "flops_per_second": _THROUGHPUT[key]}


_COSTS: dict[tuple, list[TileCost]] = {}


def _measure(fn, x: torch.Tensor, repeats: int) -> tuple[float, int]:
    """Best latency of `fn(x)` over `repeats` calls and the memory it allocated above what was resident."""
    device = x.device
    best, peak = float("inf"), 0
    with torch.no_grad():
        for _ in range(repeats):
            reset_peak_memory(device)
            before = current_memory_bytes(device)
            t0 = time.perf_counter()
            fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
            peak = max(peak, peak_memory_bytes(device) - before)
    return best, max(peak, 0)


def _key(kind: str, module: torch.nn.Module) -> tuple:
    p = next(module.parameters())
    return kind, id(module), p.device, p.dtype


def measure_tile_costs(upscaler, repeats: int = 2) -> list[TileCost]:
    """Latency per window and peak memory per call (a batch of `upscaler.batch_size` windows) of the
    SR U-Net for each of the set's candidate tile sizes (the paper's Figure 1 b/c). Cached."""
    key = _key("sr", upscaler.unet)
    if key not in _COSTS:
        b, like = upscaler.batch_size, next(upscaler.unet.parameters())
        rows = []
        for tile in upscaler.info.tile_sizes:
            x = torch.randn(b, upscaler.latent_channels + upscaler.cond_channels, tile, tile).to(like)
            seconds, peak = _measure(lambda w: upscaler.model_output(w, 999), x, repeats)
            rows.append(TileCost(tile=tile, seconds=seconds / b, peak_bytes=int(peak)))
        _COSTS[key] = rows
    return _COSTS[key]


DECODE_PROBES = (32, 64, 96)  # latent px per side of the probe windows


def measure_decode_costs(upscaler, repeats: int = 1) -> list[TileCost]:
    """Latency and peak memory of the upscaler's decoder on one window per probe size. Cached."""
    vae = upscaler.vae
    key = _key("decode", vae)
    if key not in _COSTS:
        like, sf = next(vae.parameters()), vae.config.scaling_factor
        rows = []
        for tile in DECODE_PROBES:
            x = torch.randn(1, upscaler.latent_channels, tile, tile).to(like)
            seconds, peak = _measure(lambda z: vae.decode(z / sf).sample, x, repeats)
            rows.append(TileCost(tile=tile, seconds=seconds, peak_bytes=int(peak)))
        _COSTS[key] = rows
    return _COSTS[key]


def per_pixel(rows: list[TileCost], batch: int = 1) -> tuple[float, float]:
    """Least-squares fit of peak bytes per window = a + b * window px (a >= 0, b > 0)."""
    px = np.array([r.tile**2 for r in rows], float)
    peak = np.array([r.peak_bytes / batch for r in rows], float)
    b, a = np.polyfit(px, peak, 1) if len(rows) > 1 else (peak[0] / px[0], 0.0)
    return max(float(a), 0.0), max(float(b), 1.0)


@dataclass(frozen=True)
class MemoryPlan:
    """Windows and batches for one run under `budget` bytes of working memory."""

    budget: int
    frame_bytes: int      # full-resolution buffers held whatever the tiling (decoded frame, image copies)
    sr_window: int        # latent px per SR window (upper bound for `fitted_plan`)
    sr_batch: int
    decode_window: int
    decode_batch: int
    estimated_bytes: int  # frame + the larger of the two stages' peaks

    def describe(self) -> dict:
        return {k: v for k, v in vars(self).items()}


def frame_bytes(width: int, height: int, element_size: int = 4) -> int:
    """The decoded frame (3 channels of `element_size`), its uint8 copy, the output image and the
    source at the output size: 3 * W * H * (element_size + 3)."""
    return 3 * width * height * (element_size + 3)


def plan_memory(upscaler, output_size: tuple[int, int], budget: int, *, max_sr_window: int,
                max_decode_window: int) -> MemoryPlan:
    """The fastest windows and batches whose modelled working memory fits `budget`.

    Memory per window is fitted to measured windows (`per_pixel`); windows are kept as large as the
    budget allows (a bigger window evaluates fewer halo pixels), then batched. Raises `MemoryError`
    with one sentence when even the frame buffers and the smallest windows do not fit."""
    w, h = output_size
    frame = frame_bytes(w, h, torch.finfo(next(upscaler.vae.parameters()).dtype).bits // 8)
    left = budget - frame
    sr_a, sr_b = per_pixel(measure_tile_costs(upscaler), upscaler.batch_size)
    dec_a, dec_b = per_pixel(measure_decode_costs(upscaler))
    smallest = (2 * upscaler.info.halo + 4 * upscaler.align) ** 2

    def fit(a: float, b: float, cap: int, batch_max: int) -> tuple[int, int] | None:
        """The largest window (fewer halo pixels), then the largest batch that keeps it."""
        window = min(cap, int((left - a) / b))
        if window < smallest:
            return None
        batch = max((n for n in range(1, batch_max + 1) if n * (a + b * window) <= left), default=1)
        return window, batch

    sr = fit(sr_a, sr_b, max_sr_window, upscaler.batch_size)
    dec = fit(dec_a, dec_b, max_decode_window, upscaler.batch_size)
    if sr is None or dec is None:
        raise OverBudget(
            f"a {w}x{h} output needs at least {(frame + max(sr_a + sr_b * smallest, dec_a + dec_b * smallest)) / 2**20:.0f} "
            f"MiB of working memory here ({frame / 2**20:.0f} MiB of it for the full-resolution frame); "
            f"the budget is {budget / 2**20:.0f} MiB"
        )
    peak = frame + max(sr[1] * (sr_a + sr_b * sr[0]), dec[1] * (dec_a + dec_b * dec[0]))
    return MemoryPlan(budget=budget, frame_bytes=frame, sr_window=sr[0], sr_batch=sr[1], decode_window=dec[0],
                      decode_batch=dec[1], estimated_bytes=int(peak))
