"""The architecture of the bundled `mini` set: sized so the edit U-Net works on ~16x16 latents on a CPU.

Choices (measured on a 2-core CPU, see README "Model sets"):
- edit at 128 px with an x8 autoencoder -> 16x16 latents; one edit U-Net pass at batch 3 takes ~20 ms;
- `AutoencoderTiny`-style autoencoder (no normalisation: learns flat colours fast, tiles exactly,
  decodes 3840x2160 in a few seconds);
- v-prediction with a zero-terminal-SNR, trailing-spaced schedule (the epsilon/SD schedule
  recipe failed for a from-scratch editor: see training notes in README);
- a norm-free one-step SR U-Net (bounded receptive field, exact under ACPT).
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderTiny, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipeline.models import ArtifactDetector, EditRegionModel, LatentProjector, LatentSRUNet, LookModel

SCHEDULE = dict(
    num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
    rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True,
)


def edit_scheduler() -> DDIMScheduler:
    return DDIMScheduler(prediction_type="v_prediction", **SCHEDULE)


def upscaler_scheduler() -> DDIMScheduler:
    """One DDIM step from pure noise (zero terminal SNR) to the predicted clean latent."""
    return DDIMScheduler(prediction_type="sample", **SCHEDULE)


def vae() -> AutoencoderTiny:
    return AutoencoderTiny(
        encoder_block_out_channels=(32, 32, 32, 32), decoder_block_out_channels=(32, 32, 32, 32),
        num_encoder_blocks=(0, 2, 2, 2), num_decoder_blocks=(3, 2, 2, 0), latent_channels=4, scaling_factor=1.0,
    )


def text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def edit_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=4, block_out_channels=(64, 96, 96), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8,
    )


def projector() -> LatentProjector:
    return LatentProjector(in_channels=4, out_channels=4)


def upscaler_unet() -> LatentSRUNet:
    return LatentSRUNet(in_channels=4, cond_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
                        predict_residual=True)


def detector() -> ArtifactDetector:
    return ArtifactDetector(block_out_channels=(16, 32, 64))


def edit_region() -> EditRegionModel:
    return EditRegionModel(text_dim=64, queries=4, cond_dim=128, stem_channels=16, block_out_channels=(32, 64, 128))


def look() -> LookModel:
    return LookModel(text_dim=64, queries=4, hidden=128, image_channels=32, thumbnail=32)


def build_untrained(tokenizer_dir: str | Path, seed: int = 0) -> dict:
    """All components with seeded random weights (what the set is before training)."""
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    return {
        "vae": vae(), "tokenizer": tokenizer, "text_encoder": text_encoder(tokenizer), "unet": edit_unet(),
        "scheduler": edit_scheduler(), "projector": projector(), "upscaler": upscaler_unet(),
        "upscaler_scheduler": upscaler_scheduler(), "detector": detector(), "edit_region": edit_region(),
        "look": look(),
    }
