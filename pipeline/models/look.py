"""The look model: does an instruction ask for a global tone look, and which colour map is it?

"Make it night", "sepia", "warmer", "more contrast" change every pixel by a function of its own
colour. The 128-px editor can only say so through its latent, and a 16x16x4 latent of a photo loses
its texture and shifts its colours (about 20 dB at 4K whatever the editor does). A look needs none
of that: like the global path of HDRNet (Gharbi et al. 2017), a small network predicts one 3x4
affine colour map from the instruction (and the image's colour statistics, so a look can depend on
exposure), and the map is applied to the full-resolution source, so every edge and texture of the
4K photo is kept. A second head says whether the instruction is such a look at all; recolour,
remove, add and background edits go to the edit-region path instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


@dataclass
class LookPrediction:
    """Per image: P(the instruction is a global look), and the look as out = matrix @ rgb + offset
    (colours in [0, 1])."""

    probability: torch.Tensor  # (B,)
    matrix: torch.Tensor       # (B, 3, 3): matrix[:, out_channel, in_channel]
    offset: torch.Tensor       # (B, 3)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Apply to images (B, 3, H, W) in [0, 1]; unclipped, like the looks' own definitions."""
        return torch.einsum("boi,bihw->bohw", self.matrix, image) + self.offset[..., None, None]


class LookModel(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, text_dim: int = 64, queries: int = 4, hidden: int = 128, image_channels: int = 32,
                 thumbnail: int = 32):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.randn(queries, text_dim) * text_dim ** -0.5)
        self.pool = nn.MultiheadAttention(text_dim, num_heads=4, batch_first=True)
        self.image = nn.Sequential(  # colour statistics of a thumbnail: the looks are per-pixel, not spatial
            nn.Conv2d(3, image_channels // 2, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(image_channels // 2, image_channels, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.mlp = nn.Sequential(
            nn.Linear(queries * text_dim + 2 * image_channels, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
        )
        self.is_look = nn.Linear(hidden, 1)
        self.colour_map = nn.Linear(hidden, 12)
        nn.init.zeros_(self.colour_map.weight)  # start at the identity map
        with torch.no_grad():
            self.colour_map.bias.copy_(torch.cat([torch.eye(3).flatten(), torch.zeros(3)]))

    def forward(self, image: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor | None = None):
        """Look logits (B,) and the colour map (B, 3, 3), (B, 3) for thumbnails in [-1, 1] (B, 3, h, w)
        and the instruction's token states (B, L, D) from the editor's text encoder."""
        q = self.query_tokens[None].expand(text_states.shape[0], -1, -1)
        pad = None if text_mask is None else ~text_mask.bool()
        text, _ = self.pool(q, text_states, text_states, key_padding_mask=pad, need_weights=False)
        f = self.image(image)
        features = torch.cat([text.flatten(1), f.mean((-2, -1)), f.std((-2, -1))], dim=1)
        h = self.mlp(features)
        params = self.colour_map(h)
        return self.is_look(h)[:, 0], params[:, :9].view(-1, 3, 3), params[:, 9:]

    def predict(self, image: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor | None = None) -> LookPrediction:
        """`forward` on any image size (resized to the thumbnail here) with the probability."""
        t = self.config.thumbnail
        thumb = F.interpolate(image, size=(t, t), mode="area") if image.shape[-2:] != (t, t) else image
        logit, matrix, offset = self(thumb, text_states, text_mask)
        return LookPrediction(torch.sigmoid(logit), matrix, offset)
