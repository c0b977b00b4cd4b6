"""Model sets: every component a method needs, loaded from one folder laid out like a diffusers repo.

- `mini`: the bundled offline default (`pipeline/models/mini/`), trained by `python -m pipeline.train`.
  Components whose weights are missing are built from their committed configs with seeded random
  weights, and the set then says "untrained" everywhere it is shown.
- `sd15` / `sd15-arch`: the real SD1.5 InstructPix2Pix + SD x4 upscaler architectures (`pipeline.sd15`).
- any other value is a local folder with the same layout as `mini`.

Folder layout: `model_set.json` (settings below) and one subfolder per component: `tokenizer`,
`text_encoder`, `vae`, `unet`, `scheduler`, `projector`, `upscaler`, `upscaler_scheduler`, `detector`,
and optionally `edit_region` (without it the set's edit region comes from the edit U-Net, DiffEdit-style).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderTiny, DDIMScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipeline.models import ArtifactDetector, EditRegionModel, LatentProjector, LatentSRUNet

BUNDLED = Path(__file__).parent / "models"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ModelSetUnavailable(RuntimeError):
    """A model set that cannot be loaded here (e.g. Hub weights with no network); the message is one sentence."""


@dataclass(frozen=True)
class SetInfo:
    """Settings stored in `model_set.json`; they travel with the weights they were chosen for."""

    name: str
    description: str
    edit_resolution: int = 128          # long side of the standard-resolution edit, pixels
    edit_multiple: int = 32             # edit sides are rounded to this (U-Net downsampling x VAE factor)
    latent_factor: int = 8              # pixels per latent pixel of the edit autoencoder (upscalers report their own)
    steps: int = 20
    text_guidance: float = 1.0
    image_guidance: float = 1.0
    upscaler_kind: str = "latent-sr"    # "latent-sr" (one-step SR U-Net in the edit latent space) or "sd-x4"
    upscaler_steps: int = 1
    tile_sizes: tuple[int, ...] = (32, 64, 96, 128)  # candidate static tile sizes (latent px) for ACPT
    tile: int = 96                      # default when no memory budget asks for the measured table
    halo: int = 8
    decode_tile: int = 128
    decode_halo: int = 16               # >= the decoder's receptive field: tiled decode is exact
    trained_on: str = "SynthEdit procedural scenes (synthetic shapes on textures), not photos"
    default_projection: str = "learned"  # "reference" where no trained projector exists (sd15)
    blend_latents: bool = True          # mobilepicasso: keep the source latent outside the region while sampling
    residual_threshold: float = 0.08    # mobilepicasso: affine-fit residual above which a pixel is new structure
    composite_threshold: float = 0.1    # ip2p-composite: decoded difference (in [0, 1]) that counts as edited
    untrained: tuple[str, ...] = field(default=())  # components built from configs with random weights

    @property
    def trained(self) -> bool:
        return not self.untrained

    @property
    def label(self) -> str:
        state = "trained" if self.trained else f"UNTRAINED ({', '.join(self.untrained)} random)"
        return f"{self.name}: {self.description} [{state}]"


@dataclass
class ModelSet:
    """Loaded components. `edit_pipeline` is a stock diffusers InstructPix2Pix pipeline."""

    info: SetInfo
    edit_pipeline: StableDiffusionInstructPix2PixPipeline
    projector: torch.nn.Module
    upscaler: Any                       # a `pipeline.stages.upscale.Upscaler`
    detector: ArtifactDetector | None = None
    edit_region: EditRegionModel | None = None  # None: a training-free DiffEdit mask from the edit U-Net
    path: Path | None = None

    @property
    def vae(self):
        return self.edit_pipeline.vae


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir())


def _load_module(cls, folder: Path, untrained: list[str], name: str, seed: int):
    if _has_weights(folder):
        return cls.from_pretrained(folder, torch_dtype=torch.float32)
    untrained.append(name)
    torch.manual_seed(seed)
    return cls.from_config(cls.load_config(folder))


def _load_text_encoder(folder: Path, untrained: list[str], seed: int) -> CLIPTextModel:
    if _has_weights(folder):
        return CLIPTextModel.from_pretrained(folder, torch_dtype=torch.float32)
    untrained.append("text_encoder")
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig.from_pretrained(folder))


def load_local_set(path: str | Path, seed: int = 0) -> ModelSet:
    """Load a set folder (see module docstring); never touches the network."""
    from pipeline.stages.upscale import LatentSRUpscaler

    root = Path(path)
    if not (root / "model_set.json").is_file():
        raise ModelSetUnavailable(f"{root} is not a model set folder (no model_set.json)")
    settings = json.loads((root / "model_set.json").read_text())
    untrained: list[str] = []
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    text_encoder = _load_text_encoder(root / "text_encoder", untrained, seed)
    vae = _load_module(AutoencoderTiny, root / "vae", untrained, "vae", seed + 1)
    unet = _load_module(UNet2DConditionModel, root / "unet", untrained, "unet", seed + 2)
    projector = _load_module(LatentProjector, root / "projector", untrained, "projector", seed + 3)
    sr_unet = _load_module(LatentSRUNet, root / "upscaler", untrained, "upscaler", seed + 4)
    detector = _load_module(ArtifactDetector, root / "detector", untrained, "detector", seed + 5)
    region = (_load_module(EditRegionModel, root / "edit_region", untrained, "edit_region", seed + 6)
              if (root / "edit_region").is_dir() else None)
    settings["tile_sizes"] = tuple(settings.get("tile_sizes", SetInfo.tile_sizes))
    info = SetInfo(**settings, untrained=tuple(untrained))
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_pretrained(root, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    upscaler = LatentSRUpscaler(
        unet=sr_unet, scheduler=DDIMScheduler.from_pretrained(root, subfolder="upscaler_scheduler"), vae=vae, info=info,
    )
    for module in (text_encoder, vae, unet, projector, sr_unet, detector, region):
        if module is not None:
            module.eval().requires_grad_(False)
    return ModelSet(info=info, edit_pipeline=pipe, projector=projector, upscaler=upscaler, detector=detector,
                    edit_region=region, path=root)


def save_local_set(components: dict, info: SetInfo, out_dir: str | Path, *, weights: bool = True) -> Path:
    """Write a set folder; with `weights=False` only configs (the committed untrained state)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in asdict(info).items() if k != "untrained"}
    (out / "model_set.json").write_text(json.dumps(settings, indent=2) + "\n")
    components["tokenizer"].save_pretrained(out / "tokenizer")
    for name in ("scheduler", "upscaler_scheduler"):
        components[name].save_pretrained(out / name)
    for name in ("text_encoder", "vae", "unet", "projector", "upscaler", "detector", "edit_region"):
        module = components.get(name)
        if module is None:
            continue
        if weights:
            module.save_pretrained(out / name)
        else:
            module.config.save_pretrained(out / name) if name == "text_encoder" else module.save_config(out / name)
    return out


@lru_cache(maxsize=2)
def load_model_set(name: str = "mini") -> ModelSet:
    """`mini` (bundled), `sd15` (Hub), `sd15-arch` (real architectures, random weights) or a folder path."""
    if name in ("sd15", "sd15-arch"):
        from pipeline import sd15

        return sd15.load(pretrained=name == "sd15")
    path = BUNDLED / name if (BUNDLED / name / "model_set.json").is_file() else Path(name)
    if not path.exists():
        raise ModelSetUnavailable(f"unknown model set {name!r}: use mini, sd15, sd15-arch or a folder path")
    return load_local_set(path)
