"""Stage 2: map the edited latent to the upscaler's high-resolution conditioning latent.

`learned`: the `LatentProjector` (latent in, latent out). `reference`: decode -> resize -> encode,
the pixel-space path it replaces (and its training target).
"""
from __future__ import annotations

import torch

PROJECTIONS = ("learned", "reference")


def project(models, latent: torch.Tensor, cond_size: tuple[int, int], how: str = "learned") -> torch.Tensor:
    """`cond_size` is (h, w) of the upscaler's conditioning latent."""
    if how == "learned":
        return models.projector(latent.to(next(models.projector.parameters()).dtype), cond_size)
    if how == "reference":
        return models.upscaler.reference_condition(models.edit_pipeline, latent, cond_size)
    raise ValueError(f"unknown projection {how!r}; choose from {PROJECTIONS}")
