"""Model sets: every component a method needs, loaded from one folder laid out like a diffusers repo.

- `mini`: the bundled offline default (`pipeline/models/mini/`), trained by `python -m pipeline.train`.
  Components whose weights are missing are built from their committed configs with seeded random
  weights, and the set then says "untrained" everywhere it is shown.
- `sd15` / `sd15-arch`: the real SD1.5 InstructPix2Pix + SD x4 upscaler architectures (`pipeline.sd15`).
- any other value is a local folder with the same layout as `mini`.

Folder layout: `model_set.json` (settings below) and one subfolder per component: `tokenizer`,
`text_encoder`, `vae`, `unet`, `scheduler`, `projector`, `upscaler`, `upscaler_scheduler`, `detector`,
and optionally `edit_region` (without it the set's edit region comes from the edit U-Net, DiffEdit-style)
and `look` (without it global looks go through the editor like every other edit).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, DDIMScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as hf_logging

from pipeline import sd15
from pipeline.model_set import BUNDLED, WEIGHT_SUFFIXES, ModelSet, ModelSetUnavailable, SetInfo, has_weights
from pipeline.models import ArtifactDetector, EditRegionModel, LatentProjector, LatentSRUNet, LookModel
from pipeline.stages.upscale import LatentSRUpscaler

__all__ = ["BUNDLED", "WEIGHT_SUFFIXES", "ModelSet", "ModelSetUnavailable", "SetInfo", "load_local_set",
           "load_model_set", "load_set", "save_local_set"]


def _load_module(cls, folder: Path, untrained: list[str], name: str, seed: int):
    if has_weights(folder):
        return cls.from_pretrained(folder, torch_dtype=torch.float32)
    untrained.append(name)
    torch.manual_seed(seed)
    return cls.from_config(cls.load_config(folder))


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers draws a bar for loading or saving even a 36-tensor encoder (milliseconds): none on stderr."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_text_encoder(folder: Path, untrained: list[str], seed: int) -> CLIPTextModel:
    if has_weights(folder):
        with _no_progress_bars():
            return CLIPTextModel.from_pretrained(folder, torch_dtype=torch.float32)
    untrained.append("text_encoder")
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig.from_pretrained(folder))


def load_local_set(path: str | Path, seed: int = 0) -> ModelSet:
    """Load a set folder (see module docstring); never touches the network."""
    root = Path(path)
    if not (root / "model_set.json").is_file():
        raise ModelSetUnavailable(f"{root} is not a model set folder (no model_set.json)")
    settings = json.loads((root / "model_set.json").read_text())
    untrained: list[str] = []
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    text_encoder = _load_text_encoder(root / "text_encoder", untrained, seed)
    vae = _load_module(AutoencoderTiny, root / "vae", untrained, "vae", seed + 1)
    unet = _load_module(UNet2DConditionModel, root / "unet", untrained, "unet", seed + 2)
    projector = _load_module(LatentProjector, root / "projector", untrained, "projector", seed + 3)
    sr_unet = _load_module(LatentSRUNet, root / "upscaler", untrained, "upscaler", seed + 4)
    detector = _load_module(ArtifactDetector, root / "detector", untrained, "detector", seed + 5)
    region = (_load_module(EditRegionModel, root / "edit_region", untrained, "edit_region", seed + 6)
              if (root / "edit_region").is_dir() else None)
    look = _load_module(LookModel, root / "look", untrained, "look", seed + 7) if (root / "look").is_dir() else None
    settings["tile_sizes"] = tuple(settings.get("tile_sizes", SetInfo.tile_sizes))
    settings["photo_looks"] = tuple(settings.get("photo_looks", ()))
    info = SetInfo(**settings, untrained=tuple(untrained))
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_pretrained(root, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    upscaler = LatentSRUpscaler(
        unet=sr_unet, scheduler=DDIMScheduler.from_pretrained(root, subfolder="upscaler_scheduler"), vae=vae, info=info,
    )
    for module in (text_encoder, vae, unet, projector, sr_unet, detector, region, look):
        if module is not None:
            module.eval().requires_grad_(False)
    return ModelSet(info=info, edit_pipeline=pipe, projector=projector, upscaler=upscaler, detector=detector,
                    edit_region=region, look=look, path=root)


def save_local_set(components: dict, info: SetInfo, out_dir: str | Path, *, weights: bool = True) -> Path:
    """Write a set folder; with `weights=False` only configs (the committed untrained state)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in asdict(info).items() if k != "untrained"}
    (out / "model_set.json").write_text(json.dumps(settings, indent=2) + "\n")
    components["tokenizer"].save_pretrained(out / "tokenizer")
    for name in ("scheduler", "upscaler_scheduler"):
        components[name].save_pretrained(out / name)
    for name in ("text_encoder", "vae", "unet", "projector", "upscaler", "detector", "edit_region", "look"):
        module = components.get(name)
        if module is None:
            continue
        if weights:
            with _no_progress_bars():
                module.save_pretrained(out / name)
        else:
            module.config.save_pretrained(out / name) if name == "text_encoder" else module.save_config(out / name)
    return out


def load_set(name: str = "mini") -> ModelSet:
    """`mini` (bundled), `sd15` (Hub), `sd15-arch` (real architectures, random weights) or a folder path."""
    if name in ("sd15", "sd15-arch"):
        return sd15.load(pretrained=name == "sd15")
    path = BUNDLED / name if (BUNDLED / name / "model_set.json").is_file() else Path(name)
    if not path.exists():
        raise ModelSetUnavailable(f"unknown model set {name!r}: use mini, sd15, sd15-arch or a folder path")
    return load_local_set(path)


@lru_cache(maxsize=2)
def load_model_set(name: str = "mini") -> ModelSet:
    """`load_set`, one shared copy per name (read-only use: a copy to move to a device comes from `load_set`)."""
    return load_set(name)
