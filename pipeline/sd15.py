"""The `sd15` and `sd15-arch` model sets: SD1.5 InstructPix2Pix editing + the SD x4 upscaler.

- `sd15`: the published checkpoints from the Hugging Face Hub: `timbrooks/instruct-pix2pix`
  (edit, EulerAncestral as published, 512 px) and `stabilityai/stable-diffusion-x4-upscaler`.
  With no Hub access, `load(pretrained=True)` raises `ModelSetUnavailable` with one sentence.
- `sd15-arch`: the same architectures, built offline from the configs committed in
  `pipeline/configs/sd15-arch/`, with RANDOM weights. FLOPs, memory and time do not depend on
  weight values, so this set is for cost measurements; its outputs are noise.

How the stages map onto the x4 upscaler (whose YONOS-SR counterpart in the paper has no public
weights, so a few-step SD x4 run stands in for the one-step SR model):
- its "conditioning latent" is the low-resolution RGB image at target/4 (3 channels, [-1, 1]);
  the x4 U-Net's latent has the same spatial size, and its own VAE decodes x4;
- the reference projection is decode (IP2P VAE) -> bicubic resize to target/4; the learned
  projection is a `LatentProjector(in_channels=4, out_channels=3)` from the 4-channel edit latent
  straight to that RGB image. No trained projector weights exist, so the set's default projection
  is `reference` unless weights are found (see `projector_dir`);
- the noise augmentation of the low-resolution image (`low_res_scheduler.add_noise` at
  `noise_level`) is part of the upscaler (`SDx4Upscaler.denoise`), applied to whatever projection
  produced the conditioning, so the projector's target is the clean image.
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipeline.model_set import BUNDLED, ModelSet, ModelSetUnavailable, SetInfo, has_weights
from pipeline.models import LatentProjector
from pipeline.stages.upscale import TileCallback, decode_plan, decode_tiled, decode_window, initial_noise, sr_plan
from pipeline.tiling import TilePlan, run_tiled

CONFIGS = Path(__file__).parent / "configs" / "sd15-arch"
TOKENIZER = BUNDLED / "mini" / "tokenizer"  # the real CLIP BPE (same vocabulary as SD's tokenizers)
EDIT_REPO = "timbrooks/instruct-pix2pix"
UPSCALER_REPO = "stabilityai/stable-diffusion-x4-upscaler"
PROJECTOR_ENV = "MOBILEPICASSO_SD15_PROJECTOR"  # folder with trained `LatentProjector(4 -> 3)` weights

UNAVAILABLE = (
    f"the sd15 set downloads {EDIT_REPO} and {UPSCALER_REPO} from the Hugging Face Hub, "
    "which is not reachable here; use --models mini (or sd15-arch for cost measurements)"
)

COMMON = dict(
    edit_resolution=512, edit_multiple=64,  # SD1.5: U-Net downsampling 8 x VAE 8
    latent_factor=8,                        # the EDIT autoencoder's factor; the upscaler reports its own (4)
    steps=20, text_guidance=7.5, image_guidance=1.5,
    upscaler_kind="sd-x4", upscaler_steps=20,
    tile_sizes=(64, 96, 128), tile=128, halo=16,  # x4 latent px (= low-res px); 128 is the model's native size
    decode_tile=64, decode_halo=16,
)
SD15 = dict(
    name="sd15",
    description="SD1.5 InstructPix2Pix (timbrooks/instruct-pix2pix) + SD x4 upscaler (stabilityai), Hub weights",
    trained_on="the published checkpoints' training data (LAION-based photos)",
    **COMMON,
)
SD15_ARCH = dict(
    name="sd15-arch",
    description="real SD1.5 InstructPix2Pix + SD x4 upscaler architectures with RANDOM weights "
    "(for cost measurements; outputs are noise)",
    trained_on="nothing: random weights",
    **COMMON,
)


@dataclass
class SDx4Upscaler:
    """The SD x4 upscaler behind the same interface as `LatentSRUpscaler`.

    Each denoising step computes the U-Net output tile by tile (ACPT, naive or overlap) and takes
    one scheduler step on the full latent, so any step count works. Empty prompt, guidance 1 (one
    U-Net pass per tile per step); the empty-prompt embedding is computed once at load time.
    """

    unet: UNet2DConditionModel
    scheduler: Any                     # DDIMScheduler (v-prediction) as published
    low_res_scheduler: DDPMScheduler   # noise augmentation of the low-res conditioning image
    vae: AutoencoderKL                 # decodes the x4 latent to 4x its size
    prompt_embeds: torch.Tensor        # (1, 77, 1024): the OpenCLIP text encoder on ""
    info: Any
    noise_level: int = 20              # the diffusers pipeline's default
    batch_size: int = 1                # tiles per U-Net call (the real U-Net is large)

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def components(self) -> dict[str, Any]:
        return {"unet": self.unet, "scheduler": self.scheduler, "low_res_scheduler": self.low_res_scheduler,
                "vae": self.vae}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "SDx4Upscaler":
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        self.prompt_embeds = self.prompt_embeds.to(device=device, dtype=dtype)
        return self

    @property
    def align(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.out_channels

    @property
    def cond_channels(self) -> int:
        return self.unet.config.in_channels - self.unet.config.out_channels

    def condition_size(self, width: int, height: int) -> tuple[int, int]:
        """(h, w) of the low-resolution conditioning image (= the x4 latent) for a width x height output."""
        f = self.latent_factor
        return math.ceil(height / f), math.ceil(width / f)

    def reference_condition(self, edit_pipeline, latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """decode (edit VAE) -> bicubic resize to `size`: the clean low-res RGB image in [-1, 1]."""
        vae = edit_pipeline.vae
        pixels = vae.decode(latent / vae.config.scaling_factor).sample
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False)
        return pixels.clamp(-1, 1).to(self.unet.dtype)  # the two stages may differ in dtype

    def augment(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The pipeline's noise augmentation of the low-res image at `noise_level`."""
        noise = initial_noise(cond.shape, generator, cond)
        level = torch.tensor([self.noise_level], dtype=torch.long, device=cond.device)
        return self.low_res_scheduler.add_noise(cond, noise, level)

    def plan(self, size: tuple[int, int], *, mode: str = "acpt", tile: int | tuple[int, int] | None = None,
             halo: int | None = None, max_window: int | None = None) -> TilePlan:
        return sr_plan(self, size, mode=mode, tile=tile, halo=halo, max_window=max_window)

    def model_output(self, windows: torch.Tensor, t) -> torch.Tensor:
        """The x4 U-Net on a batch of windows holding [noisy latent (4), noise-augmented image (3)] channels."""
        b = windows.shape[0]
        return self.unet(
            windows, t, encoder_hidden_states=self.prompt_embeds.expand(b, -1, -1),
            class_labels=torch.full((b,), self.noise_level, dtype=torch.long, device=windows.device),
        ).sample

    def denoise(
        self, cond: torch.Tensor, plan: TilePlan, *, generator: torch.Generator, on_tile: TileCallback | None = None,
        steps: int | None = None, batch_size: int | None = None,
    ) -> torch.Tensor:
        sched = self.scheduler
        steps = steps or self.info.upscaler_steps
        sched.set_timesteps(steps)
        image = self.augment(cond, generator)
        latents = initial_noise((1, self.latent_channels, *cond.shape[-2:]), generator, cond) * sched.init_noise_sigma
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(sched.step).parameters else {}
        n = plan.n_tiles
        for i, t in enumerate(sched.timesteps):
            x = torch.cat([sched.scale_model_input(latents, t), image], dim=1)
            progress = None if on_tile is None else (lambda done, _n, i=i: on_tile(i * n + done, steps * n))
            out = run_tiled(lambda w: self.model_output(w, t), x, plan, batch_size=batch_size or self.batch_size,
                            on_tile=progress)
            latents = sched.step(out, t, latents, **step_kwargs).prev_sample
        return latents

    def decode_plan(self, size: tuple[int, int]) -> TilePlan:
        return decode_plan(size, self.info)

    def decode(self, latents: torch.Tensor, *, on_tile: TileCallback | None = None, need: torch.Tensor | None = None,
               max_window: int | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Tiled decode with the x4 `AutoencoderKL`; pixels in [-1, 1] (sparse with `need`, as the mini set's).

        APPROXIMATE, unlike the mini set's norm-free decoder: the KL decoder's GroupNorm layers
        and mid-block self-attention see only the tile's window, so statistics differ slightly
        from an untiled decode (tile-to-tile tone shifts on flat areas are possible; the halo
        reduces them). An untiled 4K decode is not an option: the mid-block attention over a
        960x540 latent alone would need terabytes.
        """
        return decode_tiled(self.vae, latents, factor=self.latent_factor, halo=self.info.decode_halo,
                            max_window=max_window or decode_window(self.info), batch_size=batch_size or self.batch_size,
                            on_tile=on_tile, need=need, tile=None if self.info.fit_windows else self.info.decode_tile)


# ---------------------------------------------------------------- loading


def load(pretrained: bool) -> ModelSet:
    """`sd15` (Hub weights, `pretrained=True`) or `sd15-arch` (committed configs, random weights)."""
    return _load_hub() if pretrained else load_arch()


def projector_dir() -> Path | None:
    """Where trained `LatentProjector(4 -> 3)` weights for this set are looked for, if anywhere."""
    for folder in (os.environ.get(PROJECTOR_ENV), BUNDLED / "sd15-projector"):
        if folder and has_weights(Path(folder)):
            return Path(folder)
    return None


def _projector(untrained: list[str], seed: int) -> LatentProjector:
    folder = projector_dir()
    if folder is not None:
        return LatentProjector.from_pretrained(folder, torch_dtype=torch.float32)
    untrained.append("projector")
    torch.manual_seed(seed)
    return LatentProjector.from_config(LatentProjector.load_config(CONFIGS / "projector"))


def _info(settings: dict, untrained: list[str]) -> SetInfo:
    extra = {}
    if "default_projection" in SetInfo.__dataclass_fields__:
        extra["default_projection"] = "reference" if "projector" in untrained else "learned"
    return SetInfo(**settings, **extra, untrained=tuple(untrained))


@torch.no_grad()
def empty_prompt_embeds(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> torch.Tensor:
    """The text encoder's last hidden state for "" (what the x4 pipeline feeds at guidance 1)."""
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def _assemble(info: SetInfo, pipe: StableDiffusionInstructPix2PixPipeline, upscaler: SDx4Upscaler,
              projector: torch.nn.Module, path: Path | None) -> ModelSet:
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.text_encoder, pipe.vae, pipe.unet, projector, upscaler.unet, upscaler.vae):
        module.eval().requires_grad_(False)
    return ModelSet(info=info, edit_pipeline=pipe, projector=projector, upscaler=upscaler, detector=None,
                    edit_region=None, path=path)


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _load_hub() -> ModelSet:
    from diffusers import StableDiffusionUpscalePipeline

    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # offline, "Couldn't connect to the Hub" would precede our one sentence
    try:
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            EDIT_REPO, dtype=torch.float32, safety_checker=None, requires_safety_checker=False,
        )
        x4 = StableDiffusionUpscalePipeline.from_pretrained(UPSCALER_REPO, dtype=torch.float32)
    except _hub_errors():
        raise ModelSetUnavailable(UNAVAILABLE) from None
    finally:
        diffusers_logging.set_verbosity(level)
    untrained: list[str] = []
    projector = _projector(untrained, seed=3)
    info = _info(SD15, untrained)
    embeds = empty_prompt_embeds(x4.tokenizer, x4.text_encoder)
    upscaler = SDx4Upscaler(unet=x4.unet, scheduler=x4.scheduler, low_res_scheduler=x4.low_res_scheduler,
                            vae=x4.vae, prompt_embeds=embeds, info=info, noise_level=20)
    return _assemble(info, pipe, upscaler, projector, None)


def random_init_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Materialise a module built under `accelerate.init_empty_weights()` with cheap seeded weights.

    Matrices/kernels get N(0, 1/fan_in) values: a seeded pool of normals with a prime period
    (1,000,003), read from a random offset per parameter and repeated, in one vectorised op per
    parameter; 1-D `weight`s (norms) are 1 and other 1-D parameters 0. Drawing 1.6e9 fresh
    normals (or the modules' own initialisers) takes several times longer on 2 cores; the values
    only need to keep activations finite, since this set is for cost measurements.
    """
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randn(2 * _PERIOD, generator=gen)
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is None or not p.is_meta:
                continue
            t = torch.empty(p.shape, dtype=torch.float32)
            if p.ndim == 1:
                t.fill_(1.0 if name == "weight" else 0.0)
            else:
                std = math.prod(p.shape[1:]) ** -0.5
                flat, n = t.view(-1), t.numel()
                start = int(torch.randint(0, _PERIOD, (1,), generator=gen))
                rows, rest = divmod(n, _PERIOD)
                if rows:
                    torch.mul(pool[start : start + _PERIOD].expand(rows, _PERIOD), std,
                              out=flat[: rows * _PERIOD].view(rows, _PERIOD))
                torch.mul(pool[start : start + rest], std, out=flat[rows * _PERIOD :])
            sub._parameters[name] = torch.nn.Parameter(t, requires_grad=False)
    return module


_PERIOD = 1_000_003


def _random(build, seed: int):
    from accelerate import init_empty_weights

    with init_empty_weights():
        module = build()
    return random_init_(module, seed)


def _diffusers_random(cls, folder: Path, seed: int):
    return _random(lambda: cls.from_config(cls.load_config(folder)), seed)


def _text_random(folder: Path, seed: int) -> CLIPTextModel:
    config = CLIPTextConfig.from_pretrained(folder)
    return _random(lambda: CLIPTextModel(config), seed)


def load_arch(
    configs: str | Path = CONFIGS, *, seed: int = 0, settings: dict | None = None, encode_prompt: bool = False,
) -> ModelSet:
    """The real architectures with random weights, from a config folder (default: the committed one).

    Tests pass a folder of shrunken configs with the same layout to run the same code quickly.
    Layout: `unet`, `vae`, `text_encoder`, `scheduler` (the IP2P edit pipeline), `upscaler`,
    `upscaler_vae`, `upscaler_text_encoder`, `upscaler_scheduler`, `low_res_scheduler`, `projector`;
    the tokenizer is the bundled real CLIP BPE unless the folder has its own `tokenizer`.
    `encode_prompt=True` builds the x4 text encoder too and encodes "" with it.
    """
    root = Path(configs)
    tok_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else TOKENIZER
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    untrained = ["text_encoder", "vae", "unet", "upscaler", "upscaler_vae"]
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=_diffusers_random(AutoencoderKL, root / "vae", seed + 1),
        text_encoder=_text_random(root / "text_encoder", seed),
        tokenizer=tokenizer,
        unet=_diffusers_random(UNet2DConditionModel, root / "unet", seed + 2),
        scheduler=EulerAncestralDiscreteScheduler.from_pretrained(root, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    # The x4 OpenCLIP text encoder only ever sees "", once. With random weights its output is
    # arbitrary anyway, so by default a seeded N(0, 1) tensor of its shape stands in (a
    # LayerNorm output): saves ~10 s of load time on 2 cores and 1.4 GB.
    if encode_prompt:
        x4_text = _text_random(root / "upscaler_text_encoder", seed + 6)
        embeds = empty_prompt_embeds(tokenizer, x4_text)
        del x4_text
    else:
        config = CLIPTextConfig.from_pretrained(root / "upscaler_text_encoder")
        shape = (1, config.max_position_embeddings, config.hidden_size)
        embeds = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 6))
    projector = _projector(untrained, seed=seed + 3)
    info = _info({**SD15_ARCH, **(settings or {})}, untrained)
    upscaler = SDx4Upscaler(
        unet=_diffusers_random(UNet2DConditionModel, root / "upscaler", seed + 4),
        scheduler=DDIMScheduler.from_pretrained(root, subfolder="upscaler_scheduler"),
        low_res_scheduler=DDPMScheduler.from_pretrained(root, subfolder="low_res_scheduler"),
        vae=_diffusers_random(AutoencoderKL, root / "upscaler_vae", seed + 5),
        prompt_embeds=embeds, info=info,
    )
    return _assemble(info, pipe, upscaler, projector, root)


def parameter_counts(models: ModelSet) -> dict[str, int]:
    """Parameters per component (the x4 text encoder is not kept: see `load_arch`)."""
    def n(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    pipe = models.edit_pipeline
    return {"unet": n(pipe.unet), "vae": n(pipe.vae), "text_encoder": n(pipe.text_encoder),
            "upscaler": n(models.upscaler.unet), "upscaler_vae": n(models.upscaler.vae), "projector": n(models.projector)}

