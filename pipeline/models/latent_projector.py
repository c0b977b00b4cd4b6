"""Stage 2: the learned latent projection (a continuous-scale upsampler in latent space).

The reference path maps an edited latent to the upscaler's conditioning latent by
`encode(resize(decode(z)))`: a decode at the edit size and an *encode at the output size*, which at
4K costs more than the rest of stage 2 and 3 together. The projector replaces it without making an
image. A trunk with the layout of the tiny autoencoder's decoder (diffusers' `DecoderTiny`, and
initialised from it when trained) turns the latent into a feature grid at the edit image's pixel
resolution: the detail an x8 latent cell holds is unpacked once, cheaply, at the small size. Every
output cell then samples that grid at four points inside its footprint (bilinear, so the projection
is continuous in position and scale, like LIIF, Chen et al. 2021) and a per-cell MLP (1x1 convs),
told the cell size, maps the samples to a latent: this replaces the output-size encode. The bicubic
resize of the latent is kept as the base the MLP corrects. Every output cell depends only on its own
position, so any window of the output equals that window of the whole projection (tiling and
cropped training are exact).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderTiny
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

Window = tuple[int, int, int, int]  # top, left, height, width on the target grid
SUBCELL = (-0.25, 0.25)  # sample points inside an output cell, in cell units from its centre


def _sample_grid(n_out: int, start: int, length: int, offset: float, device) -> torch.Tensor:
    """grid_sample coordinates (align_corners=False) of output cells start..start+length on one axis,
    shifted by `offset` cells from their centres."""
    pos = (torch.arange(start, start + length, device=device, dtype=torch.float32) + 0.5 + offset) / n_out
    return 2 * pos - 1


class LatentProjector(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int = 4, out_channels: int = 4, feature_channels: int = 16,
                 trunk_blocks: tuple[int, ...] = (3, 2, 2, 0), trunk_channels: tuple[int, ...] = (32, 32, 32, 32),
                 head_channels: int = 64):
        super().__init__()
        self.trunk = DecoderTiny(in_channels, feature_channels, tuple(trunk_blocks), tuple(trunk_channels),
                                 upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")
        n_samples = len(SUBCELL) ** 2
        self.head = nn.Sequential(  # the samples + (cell h, cell w) in source latent cells
            nn.Conv2d(n_samples * feature_channels + 2, head_channels, 1), nn.SiLU(),
            nn.Conv2d(head_channels, head_channels, 1), nn.SiLU(),
        )
        self.residual = nn.Conv2d(head_channels, out_channels, 1)
        self.mix = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    @torch.no_grad()
    def init_trunk_from(self, decoder: nn.Module) -> None:
        """Start the trunk as the autoencoder's decoder (same layout): its first output channels are
        then the decoded image, the rest free features, so training starts from the reference path."""
        own = self.trunk.state_dict()
        for name, value in decoder.state_dict().items():
            if own[name].shape == value.shape:
                own[name].copy_(value)
            else:  # the last conv: `out_channels` rows of the decoder's RGB head
                own[name][:value.shape[0]].copy_(value)
                if name.endswith("weight"):
                    own[name][value.shape[0]:].mul_(0.1)

    def forward(self, latent: torch.Tensor, size: tuple[int, int], window: Window | None = None) -> torch.Tensor:
        """Project `latent` (B, C, h, w) to the conditioning latent of spatial `size` (H, W), or only
        its `window` (training computes crops of a large target without the rest of it)."""
        H, W = size
        top, left, wh, ww = window or (0, 0, H, W)
        h, w = latent.shape[-2:]
        base = (F.interpolate(latent, size=size, mode="bicubic", align_corners=False) if window is None
                else bicubic_window(latent, size, window))
        features = self.trunk(latent)
        samples = []
        for dy in SUBCELL:
            ys = _sample_grid(H, top, wh, dy, latent.device)
            for dx in SUBCELL:
                xs = _sample_grid(W, left, ww, dx, latent.device)
                grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)
                samples.append(_grid_sample(features, grid, "bilinear"))
        cell = torch.tensor([h / H, w / W], device=latent.device, dtype=features.dtype)
        samples.append(cell[None, :, None, None].expand(latent.shape[0], 2, wh, ww))
        return self.mix(base) + self.residual(self.head(torch.cat(samples, dim=1)))


def bicubic_window(x: torch.Tensor, size: tuple[int, int], window: Window) -> torch.Tensor:
    """Rows/cols of `F.interpolate(x, size, mode='bicubic')` inside `window`, computed only there."""
    H, W = size
    top, left, wh, ww = window
    hi, wi = x.shape[-2:]
    ys = (torch.arange(top, top + wh, dtype=torch.float32, device=x.device) + 0.5) * hi / H - 0.5
    xs = (torch.arange(left, left + ww, dtype=torch.float32, device=x.device) + 0.5) * wi / W - 0.5
    grid = torch.stack(torch.meshgrid((2 * ys + 1) / hi - 1, (2 * xs + 1) / wi - 1, indexing="ij")[::-1], -1)
    return _grid_sample(x, grid, "bicubic")


def _grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """`F.grid_sample` with fp32 coordinates whatever the model's dtype: in bf16 (8-bit mantissa)
    a normalised coordinate is off by up to 2 cells at 4K, which ruined the projection."""
    out = F.grid_sample(x.float(), grid[None].expand(x.shape[0], -1, -1, -1), mode=mode, padding_mode="border",
                        align_corners=False)
    return out.to(x.dtype)
