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

from pipeline.tiling import TilePlan, fitted_plan, plan_tiles, restrict_to, run_tiled

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
    def plan(self, size: tuple[int, int], *, mode: str = "acpt", tile: int | tuple[int, int] | None = None,
             halo: int | None = None, max_window: int | None = None) -> TilePlan: ...
    def denoise(self, cond: torch.Tensor, plan: TilePlan, *, generator: torch.Generator,
                on_tile: TileCallback | None = None, batch_size: int | None = None) -> torch.Tensor: ...
    def decode_plan(self, size: tuple[int, int]) -> TilePlan: ...
    def decode(self, latents: torch.Tensor, *, on_tile: TileCallback | None = None, need: torch.Tensor | None = None,
               max_window: int | None = None, batch_size: int | None = None) -> torch.Tensor: ...


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
        pixels = pixels.clamp(-1, 1).to(next(self.vae.parameters()).dtype)  # the two stages may differ in dtype
        return self.vae.encode(pixels).latents * self.vae.config.scaling_factor

    def plan(self, size: tuple[int, int], *, mode: str = "acpt", tile: int | tuple[int, int] | None = None,
             halo: int | None = None, max_window: int | None = None) -> TilePlan:
        return sr_plan(self, size, mode=mode, tile=tile, halo=halo, max_window=max_window)

    def denoise(
        self, cond: torch.Tensor, plan: TilePlan, *, generator: torch.Generator, on_tile: TileCallback | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        sched = self.scheduler
        sched.set_timesteps(self.info.upscaler_steps)
        latents = initial_noise((1, self.latent_channels, *cond.shape[-2:]), generator, cond) * sched.init_noise_sigma
        for t in sched.timesteps:
            x = torch.cat([sched.scale_model_input(latents, t), cond], dim=1)
            out = run_tiled(lambda w: self.model_output(w, t), x, plan, batch_size=batch_size or self.batch_size,
                            on_tile=on_tile)
            latents = sched.step(out, t, latents).prev_sample
        return latents

    def decode_plan(self, size: tuple[int, int]) -> TilePlan:
        return decode_plan(size, self.info)

    def decode(self, latents: torch.Tensor, *, on_tile: TileCallback | None = None,
               need: torch.Tensor | None = None, max_window: int | None = None,
               batch_size: int | None = None) -> torch.Tensor:
        """Tiled decode (exact: the halo covers the norm-free decoder's receptive field); pixels in [-1, 1].
        With `need` ((h, w) bool over the latent) only the tiles whose cores it touches are decoded."""
        return decode_tiled(self.vae, latents, factor=self.latent_factor, halo=self.info.decode_halo,
                            max_window=max_window or decode_window(self.info), batch_size=batch_size or self.batch_size,
                            on_tile=on_tile, need=need, tile=None if self.info.fit_windows else self.info.decode_tile)


def sr_plan(upscaler, size: tuple[int, int], *, mode: str = "acpt", tile: int | tuple[int, int] | None = None,
            halo: int | None = None, max_window: int | None = None) -> TilePlan:
    """The upscaler's tile plan over a conditioning latent of `size` (h, w). A given `tile` is used as
    is (the tiled baselines, explicit requests); otherwise ACPT fits its window to the resolution
    under `max_window` latent px (default: the largest of the set's tile sizes, squared)."""
    info = upscaler.info
    halo = info.halo if halo is None else halo
    if tile is None and mode == "acpt" and info.fit_windows:
        return fitted_plan(*size, halo, max_window=max_window or max(info.tile_sizes) ** 2, align=upscaler.align)
    return plan_tiles(*size, tile or info.tile, halo, mode=mode, align=upscaler.align)


def decode_window(info) -> int:
    """Latent px a decode window may take by default: the set's square decode tile with its halo."""
    return (info.decode_tile + 2 * info.decode_halo) ** 2


def decode_plan(size: tuple[int, int], info, max_window: int | None = None) -> TilePlan:
    if not info.fit_windows:
        return plan_tiles(*size, info.decode_tile, info.decode_halo, mode="acpt")
    return fitted_plan(*size, info.decode_halo, max_window=max_window or decode_window(info))


def decode_tiled(
    vae: torch.nn.Module, latents: torch.Tensor, *, factor: int, halo: int, max_window: int,
    batch_size: int = 4, on_tile: TileCallback | None = None, need: torch.Tensor | None = None,
    tile: int | None = None,
) -> torch.Tensor:
    """ACPT-tiled VAE decode: peak memory is one batch of windows of at most `max_window` latent px,
    not the whole image; the window is fitted to the latent (`pipeline.tiling.fitted_plan`), or
    square `tile` when given.

    With `need` ((h, w) bool over the latent), sparse: the tile grid is laid over the bounding box of
    `need` grown by the halo (real context, clamped to the frame), only tiles whose cores touch `need`
    run, and the rest of the output stays 0. With a halo covering the decoder's receptive field every
    decoded pixel equals the dense decode's."""
    sf = vae.config.scaling_factor

    def run(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        plan = (plan_tiles(*x.shape[-2:], tile, halo, mode="acpt") if tile else
                fitted_plan(*x.shape[-2:], halo, max_window=max_window))
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
