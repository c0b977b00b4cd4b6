"""The artifact detector M (a miniature PAL4VST): per-pixel probability that a pixel is an artifact.

Used three ways, as in the paper: to filter training pairs by artifact ratio, inside the
hallucination-aware loss (soft probabilities, so it is differentiable), and as a metric.
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU())


class ArtifactDetector(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int = 3, block_out_channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        chans = list(block_out_channels)
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.down.append(_conv_block(cin, c))
            cin = c
        self.up = nn.ModuleList(_conv_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(len(chans) - 1)))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Artifact logits (B, 1, H, W) for images in [-1, 1] (B, 3, H, W); H, W multiples of 2**(levels-1)."""
        skips = []
        x = image
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.avg_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Soft artifact map in [0, 1]; pads to the network's multiple and crops back."""
        m = 2 ** (len(self.config.block_out_channels) - 1)
        h, w = image.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        padded = nn.functional.pad(image, (0, pw, 0, ph), mode="replicate") if ph or pw else image
        return torch.sigmoid(self(padded))[..., :h, :w]

    def artifact_ratio(self, image: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Share of pixels flagged as artifacts, per image: the filtering criterion."""
        return (self.probabilities(image) > threshold).float().mean(dim=(1, 2, 3))
