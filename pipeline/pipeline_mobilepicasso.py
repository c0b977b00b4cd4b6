"""`MobilePicassoPipeline`: one object holding a model set's components and running every method on it.

Written like a diffusers pipeline: components in, `from_pretrained` / `save_pretrained`, `.to(device,
dtype)` moving every component, and `__call__` returning the image with its report.

    pipe = MobilePicassoPipeline.from_pretrained("mini").to("cpu", "auto")   # or ("cuda", torch.float16)
    result = pipe(image, "make it snowy", size="4k", seed=0)
    result.image.save("edited.png"); print(result.report.to_json())
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pipeline.devices import check_device_dtype, default_dtype, parse_dtype
from pipeline.inputs import InputError, check_instruction, load_image, parse_size
from pipeline.methods import METHODS, EditJob, OverBudget
from pipeline.model_set import ModelSet, ModelSetUnavailable
from pipeline.model_sets import load_set, save_local_set
from pipeline.report import EditReport, RunMeter
from pipeline.stages.edit import standard_size


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence one library logger below ERROR while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


DEFAULT_TIME_BUDGET = 900.0  # seconds; a method estimated to take longer is reported as over budget
ORIGINS = ("auto", "transfer", "edit")

Progress = Callable[[str, int, int], None]


@dataclass
class EditResult:
    image: Image.Image | None  # None when the method failed (see report.failure_reason)
    report: EditReport


class MobilePicassoPipeline:
    """Every method of `pipeline.methods.METHODS` on one model set's components (a `ModelSet`:
    `pipeline.model_sets` builds one from a folder, `pipeline.sd15` from the Hub or configs)."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "mini") -> "MobilePicassoPipeline":
        """`mini` (bundled), `sd15` (Hub), `sd15-arch` (real architectures, random weights) or a set folder.

        Every call loads its own copy, so moving one pipeline to another device or dtype never changes
        another; `pipeline.edit()` keeps one shared copy per set instead."""
        return cls(load_set(str(name_or_path)))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the set folder `from_pretrained(folder)` reads back bit-identically (weights in fp32)."""
        if self.models.info.upscaler_kind != "latent-sr":
            raise ModelSetUnavailable(
                f"saving is supported for latent-sr sets like mini; {self.models.info.name} uses the SD x4 upscaler, "
                "whose published weights are loaded from the Hub (or built from pipeline/configs/sd15-arch)"
            )
        state = self.device, self.dtype, self.upscale_dtype, self.channels_last
        self._move(self.device, torch.float32, torch.float32, False)  # safetensors stores contiguous fp32 tensors
        try:
            components = {**self.components, "upscaler": self.models.upscaler.unet,
                          "upscaler_scheduler": self.models.upscaler.scheduler}
            return save_local_set(components, replace(self.models.info, untrained=()), folder)
        finally:
            self._move(*state)

    # ------------------------------------------------------------------ components, device, dtype

    @property
    def components(self) -> dict[str, Any]:
        """The set's components by name (`upscaler` is an `pipeline.stages.upscale.Upscaler`)."""
        m, pipe = self.models, self.models.edit_pipeline
        return {"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder, "vae": pipe.vae, "unet": pipe.unet,
                "scheduler": pipe.scheduler, "projector": m.projector, "upscaler": m.upscaler,
                "detector": m.detector, "edit_region": m.edit_region, "look": m.look}

    def _edit_modules(self) -> list[torch.nn.Module]:
        """The standard-resolution stage: text encoder, edit U-Net and autoencoder, region model, detector."""
        return [m for name in ("text_encoder", "unet", "vae", "edit_region", "look", "detector")
                if isinstance(m := self.components[name], torch.nn.Module)]

    def _upscale_modules(self) -> list[torch.nn.Module]:
        """The full-resolution stages: projector, SR U-Net and the decoder that makes the 4K pixels."""
        return [self.models.projector, *(m for m in self.models.upscaler.components.values()
                                         if isinstance(m, torch.nn.Module))]

    def modules(self) -> list[torch.nn.Module]:
        """Every distinct `nn.Module` of the set, the upscaler's included."""
        found: dict[int, torch.nn.Module] = {}
        for module in (*self._edit_modules(), *self._upscale_modules()):
            found.setdefault(id(module), module)
        return list(found.values())

    @property
    def device(self) -> torch.device:
        return self.models.edit_pipeline.unet.device

    @property
    def dtype(self) -> torch.dtype:
        """The edit stage's dtype (see `upscale_dtype` for the full-resolution stages)."""
        return self.models.edit_pipeline.unet.dtype

    @property
    def upscale_dtype(self) -> torch.dtype:
        return next(self.models.upscaler.unet.parameters()).dtype

    @property
    def channels_last(self) -> bool:
        weight = next(p for p in self.models.upscaler.vae.parameters() if p.ndim == 4)
        return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None, *,
           channels_last: bool | None = None) -> "MobilePicassoPipeline":
        """Move every component to `device` and `dtype`; an unsupported pair raises `InputError`.

        `dtype="auto"`: fp16 everywhere on CUDA; on a CPU with native bf16, bf16 for the full-resolution
        stages (projector, SR U-Net, the decoder: a dense 4K run is 95% decode) and fp32 for the 128-px
        edit stage, where bf16 saved nothing and changed what the sampler drew (-0.5 dB on one scene);
        elsewhere fp32. The upscaler then gets its own copy of the autoencoder so that the edit stage
        keeps an fp32 one. `channels_last` (default: on for any move to a new device or dtype) stores
        conv weights NHWC, which oneDNN and cuDNN run faster (`python -m pipeline bench --suite devices`)."""
        device = torch.device(device) if device is not None else self.device
        dtype = parse_dtype(dtype)
        if dtype == "auto":
            fast = default_dtype(device)
            edit_dtype, upscale_dtype = (fast, fast) if device.type == "cuda" else (torch.float32, fast)
        else:
            edit_dtype = upscale_dtype = dtype
        for d in (edit_dtype, upscale_dtype):
            check_device_dtype(device, d or self.dtype)
        if channels_last is None:
            channels_last = device != self.device or any(
                d is not None and d != current for d, current in ((edit_dtype, self.dtype), (upscale_dtype, self.upscale_dtype)))
        self._move(device, edit_dtype, upscale_dtype, channels_last)
        return self

    def _move(self, device: torch.device, edit_dtype: torch.dtype | None, upscale_dtype: torch.dtype | None,
              channels_last: bool) -> None:
        up = self.models.upscaler
        if up.vae is self.models.edit_pipeline.vae and edit_dtype != upscale_dtype:
            up.vae = copy.deepcopy(up.vae)  # one autoencoder per stage dtype (a few MB for mini)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # diffusers warns on every cast that no module asked to stay in fp32 (none here does)
        with quiet_logger("diffusers.models.modeling_utils"):
            up.to(device, upscale_dtype)
            for modules, dtype in ((self._edit_modules(), edit_dtype), (self._upscale_modules(), upscale_dtype)):
                for module in modules:
                    module.to(device=device, dtype=dtype)
                    module.to(memory_format=memory_format)

    # ------------------------------------------------------------------ running

    def __call__(
        self,
        image: str | Path | bytes | Image.Image,
        instruction: str,
        *,
        method: str = "mobilepicasso",
        size: str | int | tuple[int, int] = "4k",
        seed: int = 0,
        steps: int | None = None,
        text_guidance: float | None = None,
        image_guidance: float | None = None,
        projection: str | None = None,
        tile: int | None = None,
        halo: int | None = None,
        memory_budget: int | None = None,
        time_budget: float | None = DEFAULT_TIME_BUDGET,
        progress: Progress | None = None,
        memo: dict | None = None,
        origins: str = "auto",
        use_look: bool = True,
        use_colour_map: bool = True,
        use_fill: bool = True,
    ) -> EditResult:
        """Edit `image` following `instruction` and return the image at `size` with its report.

        Bad inputs raise `InputError`; a method that would run out of memory or over the time budget
        returns `image=None` with `report.failed` set, so comparisons keep going. Pass one `memo` dict to
        several calls on the same image and instruction to run their shared edit stage once (the report
        lists reused stages). `origins` is mobilepicasso's ablation switch: "auto" (default),
        "transfer" (no generative path) or "edit" (the mask alone); `use_look=False` sends global looks
        through the editor too (the ablation of the set's look model); `use_colour_map=False` edits
        every region with the editor, also where the region model predicts the region's colour map;
        `use_fill=False` sends removals through the editor instead of filling them from their surround.
        """
        if origins not in ORIGINS:
            raise InputError(f"origins must be auto, transfer or edit, got {origins!r}")
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        instruction = check_instruction(instruction)
        source = load_image(image)
        output_size = parse_size(size, source.size)
        if steps is not None and not 1 <= steps <= 200:
            raise InputError(f"steps must be 1-200, got {steps}")
        info = self.models.info
        job = EditJob(
            models=self.models, image=source, instruction=instruction, output_size=output_size, seed=seed,
            steps=steps or info.steps,
            text_guidance=info.text_guidance if text_guidance is None else text_guidance,
            image_guidance=info.image_guidance if image_guidance is None else image_guidance,
            meter=RunMeter(self.device), projection=projection or info.default_projection, tile=tile, halo=halo,
            memory_budget=memory_budget, time_budget=time_budget,
            progress=progress or (lambda stage, done, total: None), memo=memo, origins=origins,
            use_look=use_look, use_colour_map=use_colour_map, use_fill=use_fill,
        )
        report = EditReport(
            method=method, model_set=info.name, model_set_trained=info.trained, instruction=instruction,
            input_size=source.size, output_size=output_size,
            edit_size=standard_size(*source.size, info.edit_resolution, info.edit_multiple),
            seed=seed, steps=job.steps, text_guidance=job.text_guidance, image_guidance=job.image_guidance,
            scheduler=type(self.models.edit_pipeline.scheduler).__name__,
            device=str(self.device), dtype=str(self.dtype).removeprefix("torch."),
            upscale_dtype=str(self.upscale_dtype).removeprefix("torch."),
        )
        result: Image.Image | None = None
        try:
            with torch.no_grad():
                result = METHODS[method].run(job)
        except OverBudget as err:
            report.failed, report.failure_reason = True, f"over budget: {err}"
        except (MemoryError, torch.OutOfMemoryError) as err:
            report.failed, report.failure_reason = True, f"out of memory: {err}"
        job.fill(report)
        return EditResult(image=result, report=report)
