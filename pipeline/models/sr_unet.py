"""Stage 3 model: a one-step latent super-resolution U-Net (YONOS-SR style), without normalisation.

Input: the noisy high-resolution latent and the projected conditioning latent at the same size;
output: the model prediction used by a single scheduler step. The network has no normalisation
layers on purpose: GroupNorm statistics are computed per tile, so a normalised U-Net gives each
tile a different tone and no halo removes that seam. A norm-free U-Net has a bounded receptive
field, so ACPT with a halo covering it is *exactly* the untiled model (tested).

With `predict_residual` the network predicts a correction to the conditioning latent (which is
already the resized image in the upscaler's latent space), so an untrained or briefly trained
model starts from the resize instead of from nothing, and training only has to add detail.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(temb, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x)) + self.time(temb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(h))


class LatentSRUNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        cond_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        time_embedding_dim: int = 64,
        predict_residual: bool = False,
    ):
        super().__init__()
        chans = list(block_out_channels)
        self.time_embedding = TimestepEmbedding(chans[0], time_embedding_dim)
        self.conv_in = nn.Conv2d(in_channels + cond_channels, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        cin = chans[0]
        for i, c in enumerate(chans):
            self.down_blocks.append(_ResBlock(cin, c, time_embedding_dim))
            cin = c
            if i < len(chans) - 1:
                self.downsamplers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid_block = _ResBlock(cin, cin, time_embedding_dim)
        self.up_blocks = nn.ModuleList()
        for c in reversed(chans[:-1]):
            self.up_blocks.append(_ResBlock(cin + c, c, time_embedding_dim))
            cin = c
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)
        if predict_residual:  # start as the identity on the conditioning latent
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    @property
    def downsample_factor(self) -> int:
        """Tile windows must start on multiples of this so tiled and untiled sampling grids agree."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=sample.device, dtype=sample.dtype).reshape(-1).expand(sample.shape[0])
        temb = self.time_embedding(get_timestep_embedding(t, self.config.block_out_channels[0]).to(sample.dtype))
        x = self.conv_in(torch.cat([sample, cond], dim=1))
        skips = []
        for i, block in enumerate(self.down_blocks):
            x = block(x, temb)
            if i < len(self.downsamplers):
                skips.append(x)
                x = self.downsamplers[i](x)
        x = self.mid_block(x, temb)
        for block in self.up_blocks:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1), temb)
        out = self.conv_out(x)
        return cond + out if self.config.predict_residual else out
