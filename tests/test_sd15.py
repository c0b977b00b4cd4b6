"""The sd15 / sd15-arch model sets: offline behaviour, committed configs, the SD x4 upscaler under tiling."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline
from pipeline import sd15
from pipeline.model_sets import ModelSetUnavailable, load_model_set

# published parameter counts of the real components (millions)
PUBLISHED = {
    "unet": 859.5,                   # SD1.5 U-Net (859.52M) + the 4 extra IP2P input channels
    "vae": 83.65,                    # SD KL-f8 autoencoder
    "text_encoder": 123.06,          # CLIP ViT-L/14 text tower
    "upscaler": 473.4,               # SD x4 upscaler U-Net
    "upscaler_vae": 55.3,            # its KL-f4 autoencoder
    "upscaler_text_encoder": 340.4,  # OpenCLIP ViT-H text tower, 23 of 24 layers (penultimate)
}


def _meta_count(name: str) -> float:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = sd15.CONFIGS / name
    with init_empty_weights():
        if "text_encoder" in name:
            module = CLIPTextModel(CLIPTextConfig.from_pretrained(folder))
        else:
            cls = AutoencoderKL if "vae" in name else UNet2DConditionModel
            module = cls.from_config(cls.load_config(folder))
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_sd15_offline_is_one_clear_sentence():
    with pytest.raises(ModelSetUnavailable) as info:
        sd15.load(pretrained=True)
    message = str(info.value)
    assert "\n" not in message and message.count(". ") == 0
    assert sd15.EDIT_REPO in message and sd15.UPSCALER_REPO in message and "--models mini" in message
    assert info.value.__cause__ is None  # no chained traceback from the Hub client
    with pytest.raises(ModelSetUnavailable):
        load_model_set("sd15")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_committed_configs_have_published_sizes(name):
    assert _meta_count(name) == pytest.approx(PUBLISHED[name], abs=0.1)


def test_committed_configs_key_fields():
    def read(name: str, file: str = "config.json") -> dict:
        return json.loads((sd15.CONFIGS / name / file).read_text())

    unet, x4 = read("unet"), read("upscaler")
    assert unet["in_channels"] == 8 and unet["cross_attention_dim"] == 768 and unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert x4["in_channels"] == 7 and x4["num_class_embeds"] == 1000 and x4["cross_attention_dim"] == 1024
    assert x4["only_cross_attention"] == [True, True, True, False] and x4["use_linear_projection"]
    assert read("upscaler_vae")["scaling_factor"] == pytest.approx(0.08333)
    assert read("vae")["scaling_factor"] == pytest.approx(0.18215)
    assert read("scheduler", "scheduler_config.json")["_class_name"] == "EulerAncestralDiscreteScheduler"
    up = read("upscaler_scheduler", "scheduler_config.json")
    assert up["prediction_type"] == "v_prediction" and up["beta_start"] == 0.0001 and up["beta_end"] == 0.02
    text = read("text_encoder")
    assert (text["hidden_size"], text["num_hidden_layers"], text["max_position_embeddings"]) == (768, 12, 77)
    big = read("upscaler_text_encoder")
    assert (big["hidden_size"], big["num_hidden_layers"], big["hidden_act"]) == (1024, 23, "gelu")


# ------------------------------------------------------------------ a tiny copy of the same set

TINY = {
    "unet": dict(block_out_channels=[32, 32, 64, 64], cross_attention_dim=32, attention_head_dim=2, layers_per_block=1),
    "vae": dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1),
    "upscaler": dict(block_out_channels=[32, 32, 64, 64], cross_attention_dim=32, attention_head_dim=2, layers_per_block=1),
    "upscaler_vae": dict(block_out_channels=[32, 32, 32], layers_per_block=1),
    "text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32),
    "upscaler_text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                  projection_dim=32),
}
TINY_SETTINGS = dict(edit_resolution=128, tile_sizes=(32, 48), tile=32, halo=8, decode_tile=32, decode_halo=8,
                     upscaler_steps=2)


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory) -> Path:
    """The committed configs with every width shrunk; same classes, same depth of downsampling."""
    root = tmp_path_factory.mktemp("sd15-tiny")
    for folder in sd15.CONFIGS.iterdir():
        for file in folder.iterdir():
            config = json.loads(file.read_text())
            config.update(TINY.get(folder.name, {}))
            (root / folder.name).mkdir(exist_ok=True)
            (root / folder.name / file.name).write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def tiny(tiny_configs):
    return sd15.load_arch(tiny_configs, settings=TINY_SETTINGS)


def test_tiny_set_is_labelled_and_defaults_to_reference(tiny):
    info = tiny.info
    assert info.name == "sd15-arch" and not info.trained and "RANDOM weights" in info.label
    assert info.default_projection == "reference"  # no trained projector weights anywhere
    up = tiny.upscaler
    assert (up.latent_factor, up.align, up.latent_channels, up.cond_channels) == (4, 8, 4, 3)
    assert up.condition_size(250, 130) == (33, 63)


def test_x4_upscaler_acpt_end_to_end(tiny):
    up = tiny.upscaler
    latent = torch.randn(1, 4, 8, 8)
    size = up.condition_size(256, 192)                                 # (48, 64) low-res px
    ref = up.reference_condition(tiny.edit_pipeline, latent, size)
    learned = tiny.projector(latent, size)
    assert ref.shape == learned.shape == (1, 3, 48, 64) and ref.abs().max() <= 1
    plan = up.plan(size, mode="acpt")
    assert plan.n_tiles > 1 and plan.output_overlap == 0
    calls, ticks = [], []
    hook = up.unet.register_forward_pre_hook(lambda _m, args: calls.append(tuple(args[0].shape)))
    try:
        hr = up.denoise(ref, plan, generator=torch.Generator().manual_seed(0), on_tile=lambda i, n: ticks.append((i, n)))
    finally:
        hook.remove()
    steps = tiny.info.upscaler_steps
    assert hr.shape == (1, 4, 48, 64) and torch.isfinite(hr).all()
    assert sum(c[0] for c in calls) == plan.n_tiles * steps                 # every tile, every step
    window = plan.tiles[0].window_shape
    assert all(c[1:] == (7, *window) for c in calls)                        # one static window shape
    assert window[0] * window[1] <= 48 * 48                                 # within the set's largest tile
    assert ticks[-1] == (plan.n_tiles * steps, plan.n_tiles * steps)
    pixels = up.decode(hr)
    assert pixels.shape == (1, 3, 192, 256) and torch.isfinite(pixels).all()
    # a single tile covering the latent is the untiled computation
    whole = up.plan(size, tile=64, halo=0)
    again = up.denoise(ref, whole, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    up.scheduler.set_timesteps(steps)
    image = up.augment(ref, gen)
    x = torch.randn((1, 4, 48, 64), generator=gen) * up.scheduler.init_noise_sigma
    for t in up.scheduler.timesteps:
        out = up.model_output(torch.cat([up.scheduler.scale_model_input(x, t), image], 1), t)
        x = up.scheduler.step(out, t, x, generator=gen).prev_sample
    torch.testing.assert_close(again, x)


@pytest.mark.parametrize("method", ["mobilepicasso", "mobilepicasso-paper", "tiled-overlap", "ip2p-bicubic"])
def test_edit_through_the_public_api(tiny, monkeypatch, method):
    monkeypatch.setattr(sd15, "load", lambda pretrained: tiny)
    load_model_set.cache_clear(), pipeline.shared_pipeline.cache_clear()
    try:
        result = pipeline.edit(Image.new("RGB", (96, 64), (120, 160, 200)), "make it snowy", method=method,
                               models="sd15-arch", size="256", steps=1, projection="reference")
    finally:
        load_model_set.cache_clear(), pipeline.shared_pipeline.cache_clear()
    assert not result.report.failed
    assert result.image.size == (256, 171)
    assert result.report.model_set == "sd15-arch"
    if method in ("mobilepicasso-paper", "tiled-overlap"):
        assert result.report.tiling["mode"] == ("acpt" if method == "mobilepicasso-paper" else "overlap")
    if method == "mobilepicasso":  # no region model in the set: the edit U-Net's own (DiffEdit) mask
        assert result.report.region is not None


def test_x4_upscaler_is_an_upscaler_and_moves_with_the_pipeline(tiny_configs):
    """The SD x4 upscaler implements the `Upscaler` protocol; `.to(bf16)` moves all of it, the
    empty-prompt embedding included, and the dense method still runs."""
    from pipeline.devices import cpu_has_native_bf16
    from pipeline.stages.upscale import Upscaler

    pipe = pipeline.MobilePicassoPipeline(sd15.load_arch(tiny_configs, settings=TINY_SETTINGS))
    assert isinstance(pipe.models.upscaler, Upscaler)
    assert set(pipe.models.upscaler.components) == {"unet", "scheduler", "low_res_scheduler", "vae"}
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    pipe.to("cpu", torch.bfloat16)
    assert {p.dtype for m in pipe.modules() for p in m.parameters()} == {torch.bfloat16}
    assert pipe.models.upscaler.prompt_embeds.dtype == torch.bfloat16
    result = pipe(Image.new("RGB", (96, 64), (120, 160, 200)), "make it snowy", method="mobilepicasso-paper",
                  size="256", steps=1, projection="reference")
    assert not result.report.failed and result.report.dtype == "bfloat16"
    assert np.asarray(result.image).std() > 0


# ------------------------------------------------------------------ the real architectures


@pytest.mark.slow
def test_real_architectures_load_and_tile():
    """The committed sd15-arch set itself: ~1.6e9 random parameters (6.5 GB), then one real x4
    U-Net step over 4 ACPT tiles of 32 latent px and a real x4 VAE decode."""
    models = sd15.load(pretrained=False)
    counts = sd15.parameter_counts(models)
    for name in ("unet", "vae", "text_encoder", "upscaler", "upscaler_vae"):
        assert counts[name] / 1e6 == pytest.approx(PUBLISHED[name], abs=0.1)
    assert models.info.edit_resolution == 512 and models.info.edit_multiple == 64
    up = models.upscaler
    cond = torch.rand(1, 3, 40, 48) * 2 - 1
    plan = up.plan((40, 48), tile=32, halo=8)
    assert plan.n_tiles == 4
    with torch.no_grad():
        hr = up.denoise(cond, plan, generator=torch.Generator().manual_seed(0), steps=1)
        pixels = up.decode(hr)
    assert hr.shape == (1, 4, 40, 48) and pixels.shape == (1, 3, 160, 192)
    assert torch.isfinite(pixels).all()
