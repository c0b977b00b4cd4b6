"""MobilePicasso: instruction-based image editing at 4K, cheap in time and memory.

    from pipeline import MobilePicassoPipeline
    pipe = MobilePicassoPipeline.from_pretrained("mini")          # .to("cuda", torch.float16) on a GPU
    result = pipe(image, "make it snowy", size="4k")              # method="mobilepicasso"
    result.image.save("edited.png"); print(result.report.to_json())

`edit(image, instruction, models="mini", ...)` is the one-call form, on one shared pipeline per set.
"""
from __future__ import annotations

import os

# transformers warns at import that torchvision is absent (it falls back to PIL, which is all we use)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from pipeline.devices import default_device, parse_dtype
from pipeline.inputs import InputError, check_instruction, load_image
from pipeline.methods import METHODS
from pipeline.model_sets import ModelSetUnavailable, load_model_set
from pipeline.pipeline_mobilepicasso import DEFAULT_TIME_BUDGET, EditResult, MobilePicassoPipeline
from pipeline.report import EditReport

__all__ = ["edit", "shared_pipeline", "MobilePicassoPipeline", "EditResult", "EditReport", "InputError",
           "ModelSetUnavailable", "METHODS", "DEFAULT_TIME_BUDGET"]


@lru_cache(maxsize=4)
def shared_pipeline(models: str = "mini", device: str | None = None, dtype: str | None = None) -> MobilePicassoPipeline:
    """One pipeline per (set, device, dtype) for the one-call API. On the default (CPU, fp32) it shares
    the cached `load_model_set` copy; any other device or dtype gets its own copy, moved there."""
    if device is None and dtype is None:
        return MobilePicassoPipeline(load_model_set(models))
    target = default_device() if device in (None, "auto") else device
    return MobilePicassoPipeline.from_pretrained(models).to(target, parse_dtype(dtype) if dtype else None)


def edit(
    image: str | Path | bytes | Image.Image,
    instruction: str,
    *,
    models: str = "mini",
    device: str | None = None,
    dtype: str | None = None,
    **options,
) -> EditResult:
    """Edit `image` following `instruction` with the set `models` on `device`/`dtype` (default: the set as
    loaded, CPU fp32; "auto" for the fast choice here); `options` are `MobilePicassoPipeline.__call__`'s (method, size, seed, steps, ...)."""
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    source, instruction = load_image(image), check_instruction(instruction)  # bad input fails before any load
    return shared_pipeline(models, device, dtype)(source, instruction, **options)
