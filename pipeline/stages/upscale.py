"""Stage 3: one-step latent super-resolution over tiles, then a tiled decode to pixels.

An `Upscaler` owns the SR U-Net, its scheduler and the decoder of its latent space. Every
denoising step computes the model output over the whole latent *tile by tile* (ACPT, naive or
overlap, see `pipeline.tiling`) and then takes one scheduler step on the full latent, so the
same code serves a one-step model and a multi-step one. Decoding is tiled the same way, so peak
memory is bounded by a tile, not by the 4K image.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from pipeline.tiling import TilePlan, plan_tiles, restrict_to, run_tiled

TileCallback = Callable[[int, int], None]


@runtime_checkable
class Upscaler(Protocol):
    """What the methods need from an upscaler: the mini set's `LatentSRUpscaler` and the SD x4
    upscaler (`pipeline.sd15.SDx4Upscaler`) both implement it."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    info: Any
    batch_size: int

    @property
    def latent_factor(self) -> int: ...      # output pixels per latent pixel of its decoder
    @property
    def align(self) -> int: ...              # tile sides must be multiples of this (U-Net downsampling)
    @property
    def latent_channels(self) -> int: ...
    @property
    def cond_channels(self) -> int: ...
    @property
    def components(self) -> dict[str, Any]: ...  # its own modules and schedulers, by name

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Upscaler": ...
    def condition_size(self, width: int, height: int) -> tuple[int, int]: ...
    def reference_condition(self, edit_pipeline, latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor: ...
    def model_output(self, windows: torch.Tensor, t) -> torch.Tensor: ...
    def plan(self, size: tuple[int, int], *, mode: str = "acpt", tile: int | None = None,
             halo: int | None = None) -> TilePlan: ...
    def denoise(self, cond: torch.Tensor, plan: TilePlan, *, generator: torch.Generator,
                on_tile: TileCallback | None = None) -> torch.Tensor: ...
    def decode_plan(self, size: tuple[int, int]) -> TilePlan: ...
    def decode(self, latents: torch.Tensor, *, on_tile: TileCallback | None = None,
               need: torch.Tensor | None = None) -> torch.Tensor: ...


def initial_noise(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Gaussian noise drawn on the CPU generator (the same numbers on every device) and moved to `like`."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like)


@dataclass
class LatentSRUpscaler:
    """The mini set's upscaler: `LatentSRUNet` in the edit autoencoder's own latent space."""

    unet: torch.nn.Module
    scheduler: Any
    vae: torch.nn.Module
    info: Any
    batch_size: int = 4

    @property
    def latent_factor(self) -> int:
        return self.info.latent_factor

    @property
    def components(self) -> dict[str, Any]:
        return {"unet": self.unet, "scheduler": self.scheduler, "vae": self.vae}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "LatentSRUpscaler":
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        return self

    @property
    def align(self) -> int:
        return self.unet.downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def cond_channels(self) -> int:
        return self.unet.config.cond_channels

    def model_output(self, windows: torch.Tensor, t) -> torch.Tensor:
        """The SR U-Net on a batch of windows holding [noisy latent, conditioning] channels."""
        c = self.latent_channels
        return self.unet(windows[:, :c], t, windows[:, c:])

    def condition_size(self, width: int, height: int) -> tuple[int, int]:
        """(h, w) of the conditioning / output latent for an output image of width x height."""
        f = self.latent_factor
        return math.ceil(height / f), math.ceil(width / f)

    def reference_condition(self, edit_pipeline, latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """decode -> bicubic resize -> encode: the pixel-space path the projector replaces."""
        vae = edit_pipeline.vae
        pixels = vae.decode(latent / vae.config.scaling_factor).sample
        f = self.latent_factor
        pixels = F.interpolate(pixels, size=(size[0] * f, size[1] * f), mode="bicubic", align_corners=False)
        return self.vae.encode(pixels.clamp(-1, 1)).latents * self.vae.config.scaling_factor

    def plan(self, size: tuple[int, int], *, mode: str = "acpt", tile: int | None = None, halo: int | None = None) -> TilePlan:
        tile = tile or self.info.tile
        halo = self.info.halo if halo is None else halo
        return plan_tiles(*size, tile, halo, mode=mode, align=self.align)

    def denoise(
        self, cond: torch.Tensor, plan: TilePlan, *, generator: torch.Generator, on_tile: TileCallback | None = None
    ) -> torch.Tensor:
        sched = self.scheduler
        sched.set_timesteps(self.info.upscaler_steps)
        latents = initial_noise((1, self.latent_channels, *cond.shape[-2:]), generator, cond) * sched.init_noise_sigma
        for t in sched.timesteps:
            x = torch.cat([sched.scale_model_input(latents, t), cond], dim=1)
            out = run_tiled(lambda w: self.model_output(w, t), x, plan, batch_size=self.batch_size, on_tile=on_tile)
            latents = sched.step(out, t, latents).prev_sample
        return latents

    def decode_plan(self, size: tuple[int, int]) -> TilePlan:
        return plan_tiles(*size, self.info.decode_tile, self.info.decode_halo, mode="acpt")

    def decode(self, latents: torch.Tensor, *, on_tile: TileCallback | None = None,
               need: torch.Tensor | None = None) -> torch.Tensor:
        """Tiled decode (exact: the halo covers the norm-free decoder's receptive field); pixels in [-1, 1].
        With `need` ((h, w) bool over the latent) only the tiles whose cores it touches are decoded."""
        return decode_tiled(self.vae, latents, factor=self.latent_factor, tile=self.info.decode_tile,
                            halo=self.info.decode_halo, batch_size=self.batch_size, on_tile=on_tile, need=need)


def decode_tiled(
    vae: torch.nn.Module, latents: torch.Tensor, *, factor: int, tile: int, halo: int,
    batch_size: int = 4, on_tile: TileCallback | None = None, need: torch.Tensor | None = None,
) -> torch.Tensor:
    """ACPT-tiled VAE decode: peak memory is one batch of tiles, not the whole image.

    With `need` ((h, w) bool over the latent), sparse: the tile grid is laid over the bounding box of
    `need` grown by the halo (real context, clamped to the frame), only tiles whose cores touch `need`
    run, and the rest of the output stays 0. With a halo covering the decoder's receptive field every
    decoded pixel equals the dense decode's."""
    sf = vae.config.scaling_factor

    def run(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        plan = plan_tiles(*x.shape[-2:], tile, halo, mode="acpt")
        if mask is not None:
            plan = restrict_to(plan, mask)
        return run_tiled(lambda w: vae.decode(w / sf).sample, x, plan, scale=factor, batch_size=batch_size,
                         on_tile=on_tile)

    if need is None:
        return run(latents, None)
    rows, cols = torch.nonzero(need.any(1)).flatten(), torch.nonzero(need.any(0)).flatten()
    h, w = latents.shape[-2:]
    y0, y1 = max(0, int(rows[0]) - halo), min(h, int(rows[-1]) + 1 + halo)
    x0, x1 = max(0, int(cols[0]) - halo), min(w, int(cols[-1]) + 1 + halo)
    part = run(latents[..., y0:y1, x0:x1], need[y0:y1, x0:x1])
    out = part.new_zeros((1, part.shape[1], h * factor, w * factor))
    out[..., y0 * factor : y1 * factor, x0 * factor : x1 * factor] = part
    return out


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
        import time

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


_TILE_COSTS: dict[tuple, list] = {}


def measure_tile_costs(upscaler, repeats: int = 2) -> list:
    """Per-tile latency and peak memory of the SR U-Net for each candidate tile size (Figure 1 b/c).

    Latency is the best of `repeats` batched passes divided by the batch; memory is the rise of
    the process peak RSS over the resident set before the pass. Cached per upscaler.
    """
    import time

    from pipeline.report import peak_memory_bytes, reset_peak_memory
    from pipeline.tiling import TileCost

    unet_param = next(upscaler.unet.parameters())
    key = (id(upscaler.unet), unet_param.device, unet_param.dtype)
    if key in _TILE_COSTS:
        return _TILE_COSTS[key]
    b = upscaler.batch_size
    rows = []
    for tile in upscaler.info.tile_sizes:
        x = torch.randn(b, upscaler.latent_channels + upscaler.cond_channels, tile, tile).to(
            next(upscaler.unet.parameters()))
        best = float("inf")
        with torch.no_grad():
            for _ in range(repeats):
                reset_peak_memory()
                before = _current_rss()
                t0 = time.perf_counter()
                upscaler.model_output(x, 999)
                best = min(best, (time.perf_counter() - t0) / b)
                peak = max(peak_memory_bytes() - before, 0) if before else 0
        rows.append(TileCost(tile=tile, seconds=best, peak_bytes=int(peak)))
    _TILE_COSTS[key] = rows
    return rows


def _current_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
