"""Stage 2: the learned latent projection (a LIIF-style implicit upsampler in latent space).

The reference path maps an edited latent to the upscaler's conditioning latent by
`encode(resize(decode(z)))`: a full-resolution decode and encode. The projector replaces it without
touching pixels. A small conv net reads the latent at its own (low) resolution, where a few layers
see a whole object. Every output position then asks the four nearest low-resolution cells, LIIF
style (Chen et al. 2021): an MLP (1x1 convs) maps each cell's features, the position's offset from
that cell's centre and the output cell size to a latent, and the four answers are blended with
bilinear weights (continuous across cell borders). The offset lets one cell paint different values
inside its footprint, so the projection can put an edge where the decoder would, at any scale; the
bicubic resize of the latent is kept as the base the MLP corrects. The cost at the target size is
four small MLP evaluations per position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

Window = tuple[int, int, int, int]  # top, left, height, width on the target grid


def _axis(n_in: int, n_out: int, start: int, length: int, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """For target positions start..start+length on one axis: the two nearest source cells (indices,
    clamped) and the bilinear weight and signed offset (in source cells) to each."""
    pos = (torch.arange(start, start + length, device=device, dtype=torch.float32) + 0.5) * n_in / n_out - 0.5
    lo = pos.floor()
    frac = pos - lo
    idx = [lo.clamp(0, n_in - 1).long(), (lo + 1).clamp(0, n_in - 1).long()]
    weights = [1 - frac, frac]
    offsets = [frac, frac - 1]  # position minus cell centre
    return idx, list(zip(weights, offsets))


class LatentProjector(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int = 4, out_channels: int = 4, hidden_channels: int = 32,
                 context_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(context_layers):  # receptive field 2 * context_layers + 1 latent pixels
            layers += [nn.Conv2d(cin, hidden_channels, 3, padding=1), nn.SiLU()]
            cin = hidden_channels
        self.context = nn.Sequential(*layers)
        self.head = nn.Sequential(  # features + (offset y, offset x) + (cell h, cell w)
            nn.Conv2d(hidden_channels + 4, hidden_channels, 1), nn.SiLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1), nn.SiLU(),
        )
        self.residual = nn.Conv2d(hidden_channels, out_channels, 1)
        self.mix = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    def forward(self, latent: torch.Tensor, size: tuple[int, int], window: Window | None = None) -> torch.Tensor:
        """Project `latent` (B, C, h, w) to the conditioning latent of spatial `size` (H, W), or only
        its `window` (training computes crops of a large target without the rest of it)."""
        H, W = size
        top, left, wh, ww = window or (0, 0, H, W)
        h, w = latent.shape[-2:]
        base = (F.interpolate(latent, size=size, mode="bicubic", align_corners=False) if window is None
                else bicubic_window(latent, size, window))
        features = self.context(latent)
        iy, wy = _axis(h, H, top, wh, latent.device)
        ix, wx = _axis(w, W, left, ww, latent.device)
        cell = torch.tensor([h / H, w / W], device=latent.device, dtype=latent.dtype)
        out = 0
        for a in range(2):
            for b in range(2):
                f = features[:, :, iy[a]][:, :, :, ix[b]]  # (B, C, wh, ww): that neighbour's features
                weight = wy[a][0][:, None] * wx[b][0][None, :]
                geometry = torch.stack([
                    wy[a][1][:, None].expand(wh, ww), wx[b][1][None, :].expand(wh, ww),
                    cell[0].expand(wh, ww), cell[1].expand(wh, ww)]).to(f.dtype)
                g = self.head(torch.cat([f, geometry[None].expand(f.shape[0], -1, -1, -1)], dim=1))
                out = out + weight * self.residual(g)
        return self.mix(base) + out


def bicubic_window(x: torch.Tensor, size: tuple[int, int], window: Window) -> torch.Tensor:
    """Rows/cols of `F.interpolate(x, size, mode='bicubic')` inside `window`, computed only there."""
    H, W = size
    top, left, wh, ww = window
    hi, wi = x.shape[-2:]
    ys = (torch.arange(top, top + wh, dtype=torch.float32, device=x.device) + 0.5) * hi / H - 0.5
    xs = (torch.arange(left, left + ww, dtype=torch.float32, device=x.device) + 0.5) * wi / W - 0.5
    grid = torch.stack(torch.meshgrid((2 * ys + 1) / hi - 1, (2 * xs + 1) / wi - 1, indexing="ij")[::-1], -1)
    return F.grid_sample(x, grid[None].expand(x.shape[0], -1, -1, -1).to(x), mode="bicubic",
                         padding_mode="border", align_corners=False)
