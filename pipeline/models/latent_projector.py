"""Stage 2: the learned latent projection (FeatUp / joint-bilateral-upsampler style).

The reference path maps an edited latent to the upscaler's conditioning latent by
`encode(resize(decode(z)))`: a full-resolution decode and encode. The projector replaces it with
a resize in latent space followed by an edge-aware refinement *guided by the latent itself*: a
small conv head predicts, per output pixel, softmax weights over the 3x3 neighbourhood of the
resized latent (a learned joint-bilateral filter) plus a residual. It never touches pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class LatentProjector(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int = 4, out_channels: int = 4, hidden_channels: int = 32, kernel_size: int = 3):
        super().__init__()
        k = kernel_size
        self.guide = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1), nn.SiLU(),
        )
        self.kernel_logits = nn.Conv2d(hidden_channels, k * k, 3, padding=1)
        self.residual = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        self.mix = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.kernel_logits.weight)
        nn.init.zeros_(self.kernel_logits.bias)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    def forward(self, latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Project `latent` (B, C, h, w) to the conditioning latent of spatial `size` (H, W)."""
        return self.refine(F.interpolate(latent, size=size, mode="bicubic", align_corners=False))

    def refine(self, up: torch.Tensor) -> torch.Tensor:
        """The learned part, applied to the bicubically resized latent (training runs it on crops)."""
        k = self.config.kernel_size
        size = up.shape[-2:]
        features = self.guide(up)
        weights = torch.softmax(self.kernel_logits(features), dim=1)  # (B, k*k, H, W)
        neighbours = F.unfold(F.pad(up, [k // 2] * 4, mode="replicate"), k)  # (B, C*k*k, H*W)
        b, c = up.shape[:2]
        neighbours = neighbours.view(b, c, k * k, *size)
        filtered = (neighbours * weights.unsqueeze(1)).sum(dim=2)
        return self.mix(filtered) + self.residual(features)
