"""The edit-region model: where, in the source, an instruction asks for a change.

A text-conditioned segmentation U-Net at the edit size. Two design choices carry it:
- **FiLM conditioning** (Perez et al. 2018) from the instruction's token states (the editor's own
  text encoder, frozen) pooled by a few learned queries: "the circle" has to switch on the
  channels that find circles, everywhere in the image, which is what a per-channel scale and
  shift does cheaply; cross-attention at every level was 6x slower here for the same masks.
- **Coordinate channels** (CoordConv): "add a star in the top left" names a *place*, which a
  translation-equivariant network cannot output without knowing where it is.
- **A language-driven dot-product head** (LSeg, Li et al. 2022): the logit of a pixel is the inner
  product of its embedding with an embedding of the instruction, so every pixel is compared with
  the words directly (FiLM alone mostly learned "all shapes" for "the circle" in the same steps).
- **A text-placed prior**: "add a star in the top left" names a region no pixel shows yet; the
  instruction (pooled by its own queries) and the frame's aspect predict a coarse map over the frame
  (an MLP, upsampled) added to the logits. It reads no pixel, so it is trained on its own batches of
  edits that add something: a place and a shape said only in words are learned in minutes.
- **Concept matching**: heads for the concept under each pixel and the concept the instruction
  names (trained on dense labels where the data has them: SynthEdit's shape kinds) add -log(1 - p)
  for the probability p that the two agree, so "the circle" selects circles as soon as each side
  knows its concepts; the term only ever selects, and a per-instruction gate can turn it off.
- **The region's colour map**: a recolour, a new background or an added shape makes the region one
  affine colour map of the source (a flat new colour is the map with a zero matrix). A head reads the
  instruction and the region's pooled features and colours and predicts that 3x4 map and whether the
  edit *is* such a map (not for "remove", whose region needs new structure). Like the look model,
  the map is applied to the full-resolution source, so the 16x16 latent of the editor never has to
  carry the new colour. One more per-instruction head says whether the edit adds something new
  (its region's border is then its own, not an edge of the source).
The U-Net runs at half the edit size; a short full-resolution head sharpens the borders.

**Border refinement at the edit size** (CascadePSP, Cheng et al. 2020): a small class-agnostic
network reads the source at the edit size and the coarse region upsampled to it, and corrects the
coarse logits near the region (within `refine_band` pixels). It reads no text, so it learns only
what a border is: a 64-px region is 1-2 px off around every shape and misses most of a thin line
that the 128-px source shows. It never adds anything far from the coarse region, so an empty
region stays empty, and new shapes (whose border is their own) skip it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from pipeline.models.look import LookPrediction


class FiLMBlock(nn.Module):
    """Two 3x3 convolutions, each followed by GroupNorm, a FiLM scale/shift from the text, SiLU."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(min(8, cout // 4), cout)
        self.norm2 = nn.GroupNorm(min(8, cout // 4), cout)
        self.film = nn.Linear(cond_dim, 4 * cout)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s1, b1, s2, b2 = self.film(cond)[..., None, None].chunk(4, dim=1)
        x = F.silu(self.norm1(self.conv1(x)) * (1 + s1) + b1)
        return F.silu(self.norm2(self.conv2(x)) * (1 + s2) + b2)


class RegionRefiner(nn.Module):
    """A three-level U-Net on (source, coarse probability, coarse logit) at the edit size; it returns a
    correction to the coarse logits (zero at initialisation: the refiner starts as the identity)."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU())
        c = list(channels)
        self.down = nn.ModuleList(block(3 + 2 if i == 0 else c[i - 1], ch, 1 if i == 0 else 2) for i, ch in enumerate(c))
        self.up = nn.ModuleList(block(c[i + 1] + c[i], c[i]) for i in reversed(range(len(c) - 1)))
        self.out = nn.Conv2d(c[0], 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, image: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image, torch.sigmoid(coarse_logits), coarse_logits.clamp(-8, 8) / 8], dim=1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return coarse_logits + self.out(x)


class EditRegionModel(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        text_dim: int = 64,
        queries: int = 4,
        cond_dim: int = 128,
        stem_channels: int = 16,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        embedding_dim: int = 32,
        aux_classes: int = 7,
        place_grid: int = 16,
        place_hidden: int = 256,
        colour_hidden: int = 128,
        refine_channels: tuple[int, ...] = (8, 24, 48),
        refine_band: int = 4,
    ):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.randn(queries, text_dim) * text_dim ** -0.5)
        self.pool = nn.MultiheadAttention(text_dim, num_heads=4, batch_first=True)
        self.cond = nn.Sequential(nn.Linear(queries * text_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        chans = list(block_out_channels)
        self.stem = nn.Conv2d(3 + 2, stem_channels, 3, padding=1)
        self.down_stem = nn.Conv2d(stem_channels, chans[0], 3, stride=2, padding=1)
        self.down = nn.ModuleList(FiLMBlock(c if i == 0 else chans[i - 1], c, cond_dim) for i, c in enumerate(chans))
        self.up = nn.ModuleList(FiLMBlock(chans[i + 1] + chans[i], chans[i], cond_dim) for i in reversed(range(len(chans) - 1)))
        self.head = FiLMBlock(chans[0] + stem_channels, stem_channels, cond_dim)
        self.pixel_embedding = nn.Conv2d(stem_channels, embedding_dim, 1)
        self.text_embedding = nn.Linear(cond_dim, embedding_dim + 1)  # the query and a per-instruction bias
        # a coarse per-instruction map over the frame, from the text and the frame's log aspect
        self.place_queries = nn.Parameter(torch.randn(queries, text_dim) * text_dim ** -0.5)
        self.place_pool = nn.MultiheadAttention(text_dim, num_heads=4, batch_first=True)
        self.place = nn.Sequential(nn.Linear(queries * text_dim + 1, place_hidden), nn.SiLU(),
                                   nn.Linear(place_hidden, place_hidden), nn.SiLU(),
                                   nn.Linear(place_hidden, place_grid * place_grid))
        nn.init.zeros_(self.place[-1].weight)
        nn.init.zeros_(self.place[-1].bias)
        self.pixel_kinds = nn.Conv2d(stem_channels, aux_classes, 1)
        self.text_kinds = nn.Linear(cond_dim, aux_classes)
        self.match_gain = nn.Parameter(torch.ones(()))
        self.match_gate = nn.Linear(cond_dim, 1)  # per instruction: does it name something already there?
        nn.init.zeros_(self.match_gate.weight)
        nn.init.constant_(self.match_gate.bias, 2.0)
        self.colour_mlp = nn.Sequential(nn.Linear(cond_dim + stem_channels + 6, colour_hidden), nn.SiLU(),
                                        nn.Linear(colour_hidden, colour_hidden), nn.SiLU())
        self.is_colour_map = nn.Linear(colour_hidden, 1)
        self.adds_new = nn.Linear(cond_dim, 1)
        self.colour_map = nn.Linear(colour_hidden, 12)
        nn.init.zeros_(self.colour_map.weight)  # start at the identity map
        with torch.no_grad():
            self.colour_map.bias.copy_(torch.cat([torch.eye(3).flatten(), torch.zeros(3)]))
        self.refiner = RegionRefiner(tuple(refine_channels))

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (the stem's stride times the U-Net's pooling)."""
        return 2 ** len(self.config.block_out_channels)

    @staticmethod
    def _pool(queries: torch.Tensor, pool: nn.MultiheadAttention, text_states: torch.Tensor,
              text_mask: torch.Tensor | None) -> torch.Tensor:
        q = queries[None].expand(text_states.shape[0], -1, -1)
        pad = None if text_mask is None else ~text_mask.bool()
        pooled, _ = pool(q, text_states, text_states, key_padding_mask=pad, need_weights=False)
        return pooled.flatten(1)

    def condition(self, text_states: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool the instruction's token states (B, L, D) into one conditioning vector per image."""
        return self.cond(self._pool(self.query_tokens, self.pool, text_states, text_mask))

    def placed_prior(self, text_states: torch.Tensor, text_mask: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        """The instruction's coarse map over a frame of `size` (h, w), upsampled to it: (B, 1, h, w) logits."""
        g = self.config.place_grid
        pooled = self._pool(self.place_queries, self.place_pool, text_states, text_mask)
        aspect = torch.full_like(pooled[:, :1], float(torch.log(torch.tensor(size[1] / size[0]))))
        grid = self.place(torch.cat([pooled, aspect], dim=1)).view(-1, 1, g, g)
        return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)

    def region_colour(self, features: torch.Tensor, image: torch.Tensor, cond: torch.Tensor,
                      weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Is-a-colour-map logits (B,) and the region's affine colour map (B, 3, 3), (B, 3) on colours in
        [0, 1], from the features and colours pooled over `weights` (B, 1, H, W), the soft region."""
        total = weights.flatten(1).sum(1).clamp_min(1e-3)[:, None]
        rgb = (image + 1) / 2
        mean = (rgb * weights).flatten(2).sum(2) / total
        std = ((rgb - mean[..., None, None]) ** 2 * weights).flatten(2).sum(2).div(total).clamp_min(1e-6).sqrt()
        pooled = (features * weights).flatten(2).sum(2) / total
        h = self.colour_mlp(torch.cat([cond, pooled, mean, std], dim=1))
        params = self.colour_map(h)
        return self.is_colour_map(h)[:, 0], params[:, :9].view(-1, 3, 3), params[:, 9:]


    def forward(self, image: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor | None = None,
                return_aux: bool = False, colour_weights: torch.Tensor | None = None):
        """Edit-region logits (B, 1, H, W) for images in [-1, 1] (B, 3, H, W). With `return_aux` also the
        auxiliary per-pixel kind logits (B, K, H, W), named-kind logits (B, K), the region's colour map
        (`region_colour`, pooled over `colour_weights`, default the predicted region) and the logits (B,)
        of "the edit adds something new"."""
        b, _, h, w = image.shape
        ys = torch.linspace(-1, 1, h, device=image.device, dtype=image.dtype)
        xs = torch.linspace(-1, 1, w, device=image.device, dtype=image.dtype)
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None].expand(b, -1, -1, -1)
        cond = self.condition(text_states, text_mask)
        stem = F.silu(self.stem(torch.cat([image, coords], dim=1)))
        x = F.silu(self.down_stem(stem))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2), cond)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1), cond)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        features = self.head(torch.cat([x, stem], dim=1), cond)
        pixels = self.pixel_embedding(features)
        query, bias = self.text_embedding(cond).split([pixels.shape[1], 1], dim=1)
        what = torch.einsum("bchw,bc->bhw", pixels, query) * pixels.shape[1] ** -0.5 + bias[:, :1, None]
        pixel_kinds, text_kinds = self.pixel_kinds(features), self.text_kinds(cond)
        agree = torch.einsum("bkhw,bk->bhw", pixel_kinds.softmax(1), text_kinds.softmax(1)).clamp(0, 1 - 1e-4)
        gate = torch.sigmoid(self.match_gate(cond))[..., None]  # (B, 1, 1): "add a star" names no pixel yet
        # -log(1 - agree): 0 where the concepts disagree, large where they agree, so the term can only
        # select pixels; the negative baseline comes from the other terms
        match = -torch.log1p(-agree)
        logits = (what + gate * self.match_gain * match)[:, None] + self.placed_prior(text_states, text_mask, (h, w))
        if return_aux:
            weights = torch.sigmoid(logits) if colour_weights is None else colour_weights
            return (logits, pixel_kinds, text_kinds, self.region_colour(features, image, cond, weights),
                    self.adds_new(cond)[:, 0])
        return logits

    def refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Refined region logits at the size of `image` (B, 3, H, W) in [-1, 1] from the coarse soft region
        `coarse` (B, 1, h, w) in [0, 1] at any size: bilinear to (H, W), then the refiner's correction,
        kept within `refine_band` pixels of where the coarse region is above 0.1 (beyond: logit -20)."""
        h, w = image.shape[-2:]
        up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp(1e-4, 1 - 1e-4)
        k = 2 * self.config.refine_band + 1
        band = F.max_pool2d((up > 0.1).to(image.dtype), k, stride=1, padding=k // 2)
        m = 4  # the refiner's pooling
        ph, pw = (-h) % m, (-w) % m
        pad = (lambda t: F.pad(t, (0, pw, 0, ph), mode="replicate")) if ph or pw else (lambda t: t)
        logits = self.refiner(pad(image), pad(torch.logit(up)))[..., :h, :w]
        return torch.where(band > 0, logits, torch.full_like(logits, -20.0))

    def _padded(self, image: torch.Tensor) -> torch.Tensor:
        """`image` padded (replicated) to the network's multiple."""
        m = self.multiple
        ph, pw = (-image.shape[-2]) % m, (-image.shape[-1]) % m
        return F.pad(image, (0, pw, 0, ph), mode="replicate") if ph or pw else image

    def probabilities(self, image: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Soft edit region in [0, 1]; pads to the network's multiple and crops back."""
        h, w = image.shape[-2:]
        return torch.sigmoid(self(self._padded(image), text_states, text_mask))[..., :h, :w]

    def predict(self, image: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, LookPrediction, torch.Tensor]:
        """The soft edit region (B, 1, H, W), the region's colour map (with P(the edit is one)) and
        P(the edit adds something new) (B,)."""
        h, w = image.shape[-2:]
        padded = self._padded(image)
        inside = torch.zeros_like(padded[:, :1])
        inside[..., :h, :w] = 1  # the colour map pools over the image, not its padding
        logits = self(padded, text_states, text_mask)
        region = torch.sigmoid(logits) * inside
        *_, (is_map, matrix, offset), adds = self(padded, text_states, text_mask, return_aux=True, colour_weights=region)
        return region[..., :h, :w], LookPrediction(torch.sigmoid(is_map), matrix, offset), torch.sigmoid(adds)
