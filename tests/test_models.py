"""The mini set's own model classes: properties their training and the tiled pipeline rely on."""
import pytest
import torch
import torch.nn.functional as F

from pipeline import mini_architecture as arch
from pipeline.models.latent_projector import bicubic_window


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return module.eval()


@pytest.mark.parametrize("size,window", [((77, 41), (10, 5, 32, 32)), ((270, 480), (0, 448, 32, 32)), ((40, 40), (8, 8, 24, 24))])
def test_projector_window_is_that_window_of_the_full_projection(size, window):
    """Training computes 32-px windows of x2-x30 targets; they must be exactly the deployed output."""
    proj = _randomise(arch.projector())
    z = torch.randn(2, 4, 16, 9)
    top, left, h, w = window
    with torch.no_grad():
        assert torch.allclose(proj(z, size, window), proj(z, size)[..., top:top + h, left:left + w], atol=1e-4)


def test_projector_starts_as_the_bicubic_latent_resize():
    proj = arch.projector().eval()
    with torch.no_grad():  # zero residual; `mix` at identity is what training initialises
        proj.mix.weight.copy_(torch.eye(4)[:, :, None, None])
        proj.mix.bias.zero_()
        z = torch.randn(1, 4, 9, 16)
        assert torch.allclose(proj(z, (36, 64)), F.interpolate(z, size=(36, 64), mode="bicubic"), atol=1e-5)


def test_projector_trunk_starts_as_the_decoder():
    """Training starts the trunk from the autoencoder's decoder: its first three feature channels are
    then exactly the decoded image, so the head starts from the reference path's pixels."""
    vae = _randomise(arch.vae())
    proj = arch.projector().eval()
    proj.init_trunk_from(vae.decoder)
    z = torch.randn(1, 4, 9, 16)
    with torch.no_grad():
        assert torch.allclose(proj.trunk(z)[:, :3], vae.decoder(z), atol=1e-5)


def test_bicubic_window_matches_interpolate():
    x = torch.randn(1, 3, 16, 9)
    full = F.interpolate(x, size=(77, 41), mode="bicubic", align_corners=False)
    assert torch.allclose(bicubic_window(x, (77, 41), (3, 4, 20, 30)), full[..., 3:23, 4:34], atol=1e-5)


def test_residual_sr_unet_starts_as_the_identity_on_its_condition():
    unet = arch.upscaler_unet().eval()
    cond = torch.randn(1, 4, 24, 24)
    with torch.no_grad():
        assert torch.equal(unet(torch.randn_like(cond), 999, cond), cond)
