"""What a model set is: its settings (`SetInfo`, stored in `model_set.json`) and its loaded components
(`ModelSet`). Loading and saving live in `pipeline.model_sets`; the user-facing object that runs the
methods on a set is `pipeline.MobilePicassoPipeline`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from pipeline.models import ArtifactDetector, EditRegionModel, LookModel
from pipeline.stages.upscale import Upscaler

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
    fit_windows: bool = True            # ACPT windows fitted to the resolution; False: square `tile` / `decode_tile`
    trained_on: str = "SynthEdit procedural scenes (synthetic shapes on textures), not photos"
    default_projection: str = "learned"  # "reference" where no trained projector exists (sd15)
    blend_latents: bool = True          # mobilepicasso: keep the source latent outside the region while sampling
    residual_threshold: float = 0.08    # mobilepicasso: affine-fit residual above which a pixel is new structure
    composite_threshold: float = 0.1    # ip2p-composite: decoded difference (in [0, 1]) that counts as edited
    new_edge_gain: float = 4.0          # mobilepicasso: steepening of a new shape's upsampled soft border
    support_fraction: float = 0.5       # mobilepicasso: share of the region core's colours the MCD support keeps
    colour_support: str = "everywhere"  # mobilepicasso: where a learned region of a thing already there keeps
                                        # to its core's colours: "everywhere", "border" (near its border) or "off"
    photo_looks: tuple[str, ...] = ()   # PhotoEdit looks measured to work on held-out photos at 4K (results/photos/)
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
    upscaler: Upscaler
    detector: ArtifactDetector | None = None
    edit_region: EditRegionModel | None = None  # None: a training-free DiffEdit mask from the edit U-Net
    look: LookModel | None = None  # None: global looks go through the editor like every other edit
    path: Path | None = None

    @property
    def vae(self):
        return self.edit_pipeline.vae


def has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir())
