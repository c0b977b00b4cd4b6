"""Where the instruction asks for a change: a soft edit-region mask at the edit size.

Every model set has one:
- a learned `EditRegionModel` where the set ships one (mini), run at half the edit size and its
  border refined at the edit size; it also
  predicts the region's colour map (a recolour, a new background or an added flat shape is one
  affine colour map of the source inside the region) and whether the edit is one;
- otherwise a training-free mask from the edit U-Net itself (DiffEdit, Couairon et al. 2023, as
  ZONE does for InstructPix2Pix): the contrast of its predictions with and without the
  instruction on noised copies of the source, averaged over a few noise draws.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.models.look import LookPrediction

REGION_THRESHOLD = 0.5
COLOUR_MAP_THRESHOLD = 0.5
TEXT_LENGTH = 32  # tokens of the instruction the region and look models read (the editor's own encoder)


@torch.no_grad()
def encode_text(pipe, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states of the editor's text encoder and their attention mask (causal: padding never leaks
    back), as the edit-region and look models read them in training and at run time."""
    tok = pipe.tokenizer(texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt")
    te = pipe.text_encoder
    states = te(tok.input_ids.to(te.device))[0]
    return states.float(), tok.attention_mask.to(states.device)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]."""
    import numpy as np

    arr = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))
    return arr.permute(2, 0, 1)[None] / 127.5 - 1


@dataclass
class EditRegion:
    """Where the instruction asks for a change, and (where the set predicts one) its colour map."""

    mask: torch.Tensor                 # (1, 1, h, w) in [0, 1] at the edit size
    colour: LookPrediction | None = None
    adds_new: float = 0.0              # P(the edit adds something new: its border is not the source's)

    @property
    def is_colour_map(self) -> bool:
        """The edit is one colour map of the source inside the region (no editor needed)."""
        return self.colour is not None and float(self.colour.probability) >= COLOUR_MAP_THRESHOLD

    @property
    def is_removal(self) -> bool:
        """The region model's heads say the region is neither a colour map nor a new shape: what is there
        goes away (only sets with a region model say so)."""
        return self.colour is not None and not self.is_colour_map and not self.adds_new_shape

    @property
    def adds_new_shape(self) -> bool:
        """The region is a new shape: its border is its own, not an edge of the source."""
        return self.adds_new >= 0.5

    def new_shape_colour(self) -> LookPrediction:
        """The added shape's own colour, as a map with a zero matrix.

        The region model fits its map on 64-px targets, where a thin new shape is an anti-aliased
        blend of the source and its colour: a map (1 - a) * I @ rgb + a * c. At the output size the
        shape is drawn at full coverage (its border comes from the region), so the flat part
        c = offset / a, with a = 1 - trace(matrix) / 3, is the colour to draw. Without this a
        thin line came out as a faint tint of what was under it.
        """
        c = self.colour
        coverage = (1 - c.matrix.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True)).clamp_min(0.05)
        return LookPrediction(c.probability, torch.zeros_like(c.matrix), (c.offset / coverage).clamp(0, 1))


@torch.no_grad()
def learned_region(model, pipe, image: Image.Image, instruction: str, edit_size: tuple[int, int]) -> EditRegion:
    """The edit-region model at half the edit size, its region refined on the source at the edit size
    (a new shape's border is its own: its region is only upsampled)."""
    w, h = edit_size
    small = image.resize((max(8, w // 2), max(8, h // 2)), Image.Resampling.LANCZOS)
    states, mask = encode_text(pipe, [instruction])
    x = pil_to_tensor(small).to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
    p, c, adds = model.predict(x, states.to(x), mask.to(x.device))
    colour = LookPrediction(c.probability.float().cpu(), c.matrix.float().cpu(), c.offset.float().cpu())
    if float(adds) >= 0.5:
        region = F.interpolate(p.float().cpu(), size=(h, w), mode="bilinear", align_corners=False)
    else:
        full = pil_to_tensor(image.resize((w, h), Image.Resampling.LANCZOS)).to(x)
        region = torch.sigmoid(model.refine(full, p)).float().cpu()
    region[region < 1 / 512] = 0.0  # exactly nothing away from the region
    return EditRegion(region, colour, float(adds))


@torch.no_grad()
def diffedit_region(
    pipe, image: Image.Image, instruction: str, edit_size: tuple[int, int], *, generator: torch.Generator,
    draws: int = 4, timestep: int = 500,
) -> torch.Tensor:
    """|eps(instruction) - eps(empty)| of the IP2P U-Net at `timestep`, mean over `draws` noises,
    min-max normalised, upsampled from the latent grid to the edit size: (1, 1, h, w) in [0, 1]."""
    w, h = edit_size
    unet, vae, sched = pipe.unet, pipe.vae, pipe.scheduler
    device, dtype = unet.device, unet.dtype
    pixels = pil_to_tensor(image.resize(edit_size, Image.Resampling.LANCZOS)).to(device, dtype)
    image_latents = pipe.prepare_image_latents(pixels, 1, 1, dtype, device, False)
    clean = image_latents * vae.config.scaling_factor
    text = pipe._encode_prompt(instruction, device, 1, False)
    empty = pipe._encode_prompt("", device, 1, False)
    t = torch.tensor([timestep], device=device)
    total = torch.zeros_like(clean[:, :1])
    for _ in range(draws):
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(device, dtype)
        x = torch.cat([sched.add_noise(clean, noise, t), image_latents], dim=1)
        pair = unet(x.repeat(2, 1, 1, 1), t, encoder_hidden_states=torch.cat([text, empty])).sample
        total += (pair[:1] - pair[1:]).abs().mean(1, keepdim=True)
    m = total.float().cpu()
    m = (m - m.amin()) / (m.amax() - m.amin()).clamp_min(1e-8)
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)


def edit_region(models, image: Image.Image, instruction: str, edit_size: tuple[int, int], *,
                generator: torch.Generator) -> EditRegion:
    """The set's edit region for this instruction at the edit size."""
    pipe = models.edit_pipeline
    if models.edit_region is not None:
        return learned_region(models.edit_region, pipe, image, instruction, edit_size)
    return EditRegion(diffedit_region(pipe, image, instruction, edit_size, generator=generator))
