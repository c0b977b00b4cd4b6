"""Stage 1: instruction-based editing at the standard resolution with a stock diffusers IP2P pipeline.

The pipeline runs with `output_type="latent"`: the edited latent goes straight on to the
projection, never through pixels. Dual classifier-free guidance (text and image scales) is the
pipeline's own: 3 U-Net passes per step when text guidance > 1 and image guidance >= 1, else 1.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image


def standard_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The edit size: long side `resolution`, aspect kept, both sides rounded to `multiple`."""
    scale = resolution / max(width, height)
    def fit(n: int) -> int:
        return max(multiple, round(n * scale / multiple) * multiple)
    return fit(width), fit(height)


def uses_cfg(text_guidance: float, image_guidance: float) -> bool:
    """Mirrors the diffusers IP2P pipeline's own switch for dual guidance."""
    return text_guidance > 1.0 and image_guidance >= 1.0


@dataclass
class KeepOutside:
    """Blended latent diffusion (Avrahami et al. 2023): after every denoising step, outside `mask`
    (1, 1, h/f, w/f) the latent is replaced by the source latent noised to the next timestep, so
    only the edit region is free to change."""

    mask: torch.Tensor
    source_latent: torch.Tensor  # clean, in the scheduler's (scaled) latent space
    generator: torch.Generator

    def __call__(self, scheduler, i: int, latents: torch.Tensor) -> torch.Tensor:
        timesteps = scheduler.timesteps
        known = self.source_latent
        if i + 1 < len(timesteps):
            noise = torch.randn(known.shape, generator=self.generator, dtype=torch.float32).to(known)
            known = scheduler.add_noise(known, noise, timesteps[i + 1 : i + 2])
        m = self.mask.to(latents)
        return m * latents + (1 - m) * known.to(latents)


def source_latent(pipe: StableDiffusionInstructPix2PixPipeline, image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The source at `size` in the edit autoencoder's scaled latent space."""
    pixels = pipe.image_processor.preprocess(image.resize(size, Image.Resampling.LANCZOS))
    vae = pipe.vae
    latents = pipe.prepare_image_latents(pixels.to(vae.device, vae.dtype), 1, 1, vae.dtype, vae.device, False)
    return latents * vae.config.scaling_factor


def edit_latent(
    pipe: StableDiffusionInstructPix2PixPipeline,
    image: Image.Image,
    instruction: str,
    *,
    size: tuple[int, int],
    steps: int,
    text_guidance: float,
    image_guidance: float,
    generator: torch.Generator,
    on_step: Callable[[int, int], None] | None = None,
    keep_outside: KeepOutside | None = None,
) -> torch.Tensor:
    """Edit `image` resized to `size` (w, h); returns the edited latent (1, C, h/f, w/f)."""
    def callback(_pipe, i, _t, kwargs):
        if keep_outside is not None:
            kwargs["latents"] = keep_outside(_pipe.scheduler, i, kwargs["latents"])
        if on_step is not None:
            on_step(i + 1, steps)
        return kwargs

    out = pipe(
        instruction,
        image=image.resize(size, Image.Resampling.LANCZOS),
        num_inference_steps=steps,
        guidance_scale=text_guidance,
        image_guidance_scale=image_guidance,
        generator=generator,
        output_type="latent",
        callback_on_step_end=callback,
    )
    return out.images


def decode_image(pipe: StableDiffusionInstructPix2PixPipeline, latent: torch.Tensor) -> Image.Image:
    """Decode a standard-resolution latent to a PIL image (for the pixel-space baselines)."""
    vae = pipe.vae
    pixels = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")[0]
