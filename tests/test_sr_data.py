"""Which cells of a training window the projector and SR losses score (`sr_data.loss_mask`)."""
import numpy as np
import pytest
import torch

from pipeline import mini_architecture as arch
from pipeline.train.sr_data import SRCrop, loss_mask, masked_mean, sample_crops


def _crop(top: int, left: int, full: int = 100, size: int = 32) -> SRCrop:
    return SRCrop(torch.zeros(4, 16, 16), full / 16, (full, full), top, left, size, None)


def test_interior_window_scores_only_its_core():
    mask = loss_mask([_crop(30, 40)], margin=4)[0, 0]
    assert mask.sum() == 24 * 24
    assert mask[4:28, 4:28].all() and not mask[:4].any() and not mask[:, 28:].any()


def test_window_at_the_frame_border_also_scores_its_margin_there():
    """Top-left corner: the first rows and columns are the frame's own border, exact in the target."""
    mask = loss_mask([_crop(0, 0)], margin=4)[0, 0]
    assert mask[:28, :28].all() and not mask[28:].any() and not mask[:, 28:].any()
    mask = loss_mask([_crop(100 - 32, 100 - 32)], margin=4)[0, 0]  # bottom-right corner
    assert mask[4:, 4:].all() and not mask[:4].any() and not mask[:, :4].any()


def test_mask_at_pixel_resolution_and_masked_mean():
    crops = [_crop(0, 40), _crop(30, 40)]
    mask = loss_mask(crops, margin=4, factor=8)
    assert mask.shape == (2, 1, 256, 256)
    assert mask[0, 0, :32, 32:224].all() and not mask[0, 0, :, :32].any() and not mask[1, 0, :32].any()
    x = torch.zeros(2, 3, 256, 256)
    x[:, :, :32] = 1.0  # error only in the top margin: scored for the border window alone
    assert masked_mean(x, mask).item() == pytest.approx(32 * 192 / mask.sum().item())


def test_border_share_places_windows_against_the_frame_edge():
    """Uniform placement reaches the frame's edge once in `full - window + 1` draws; `border` sets it."""
    vae = arch.vae().eval()
    crops = sample_crops(np.random.default_rng(0), vae, 6, 24, 4, scales=(8.0, 16.0), with_hr=False, border=1.0)
    for c in crops:
        edges = {0, c.full[0] - c.size}
        assert c.top in edges and c.left in edges, (c.top, c.left, c.full)
    crops = sample_crops(np.random.default_rng(0), vae, 6, 24, 4, scales=(8.0, 16.0), with_hr=False, border=0.0)
    assert any(0 < c.top < c.full[0] - c.size for c in crops)
