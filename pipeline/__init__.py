"""MobilePicasso: instruction-based image editing at 4K, cheap in time and memory.

    from pipeline import edit
    result = edit("photo.jpg", "make it snowy", size="4k")   # method="mobilepicasso", models="mini"
    result.image.save("edited.png"); print(result.report.to_json())
"""
from __future__ import annotations

import os

# transformers warns at import that torchvision is absent (it falls back to PIL, which is all we use)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from pipeline.inputs import InputError, check_instruction, load_image, parse_size
from pipeline.methods import METHODS, EditJob, OverBudget
from pipeline.model_sets import ModelSetUnavailable, load_model_set
from pipeline.report import EditReport, RunMeter
from pipeline.stages.edit import standard_size

__all__ = ["edit", "EditResult", "EditReport", "InputError", "ModelSetUnavailable", "METHODS"]

DEFAULT_TIME_BUDGET = 900.0  # seconds; a method estimated to take longer is reported as over budget


@dataclass
class EditResult:
    image: Image.Image | None  # None when the method failed (see report.failure_reason)
    report: EditReport


def edit(
    image: str | Path | bytes | Image.Image,
    instruction: str,
    *,
    method: str = "mobilepicasso",
    size: str | int | tuple[int, int] = "4k",
    models: str = "mini",
    seed: int = 0,
    steps: int | None = None,
    text_guidance: float | None = None,
    image_guidance: float | None = None,
    projection: str | None = None,
    tile: int | None = None,
    halo: int | None = None,
    memory_budget: int | None = None,
    time_budget: float | None = DEFAULT_TIME_BUDGET,
    progress: Callable[[str, int, int], None] | None = None,
    memo: dict | None = None,
    origins: str = "auto",
) -> EditResult:
    """Edit `image` following `instruction` and return the image at `size` with its report.

    Bad inputs raise `InputError`; a method that would run out of memory or over the time
    budget returns `image=None` with `report.failed` set, so comparisons keep going.
    Pass one `memo` dict to several calls on the same image and instruction to run their shared
    edit stage once (the report lists reused stages). `origins` is mobilepicasso's ablation switch:
    "auto" (default), "transfer" (no generative path) or "edit" (the mask alone).
    """
    if origins not in ("auto", "transfer", "edit"):
        raise InputError(f"origins must be auto, transfer or edit, got {origins!r}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    instruction = check_instruction(instruction)
    source = load_image(image)
    output_size = parse_size(size, source.size)
    if steps is not None and not 1 <= steps <= 200:
        raise InputError(f"steps must be 1-200, got {steps}")
    model_set = load_model_set(models)
    info = model_set.info
    job = EditJob(
        models=model_set, image=source, instruction=instruction, output_size=output_size, seed=seed,
        steps=steps or info.steps,
        text_guidance=info.text_guidance if text_guidance is None else text_guidance,
        image_guidance=info.image_guidance if image_guidance is None else image_guidance,
        meter=RunMeter(), projection=projection or info.default_projection, tile=tile, halo=halo, memory_budget=memory_budget, time_budget=time_budget,
        progress=progress or (lambda stage, done, total: None), memo=memo, origins=origins,
    )
    report = EditReport(
        method=method, model_set=info.name, model_set_trained=info.trained, instruction=instruction,
        input_size=source.size, output_size=output_size,
        edit_size=standard_size(*source.size, info.edit_resolution, info.edit_multiple),
        seed=seed, steps=job.steps, text_guidance=job.text_guidance, image_guidance=job.image_guidance,
        scheduler=type(model_set.edit_pipeline.scheduler).__name__,
    )
    result: Image.Image | None = None
    try:
        with torch.no_grad():
            result = METHODS[method].run(job)
    except OverBudget as err:
        report.failed, report.failure_reason = True, f"over budget: {err}"
    except (MemoryError, torch.OutOfMemoryError) as err:
        report.failed, report.failure_reason = True, f"out of memory: {err}"
    report.edit_size = job.details.get("edit_size", report.edit_size)
    report.projection = job.details.get("projection")
    report.tiling = job.details.get("tiling")
    report.region = job.details.get("region")
    report.note = job.details.get("note")
    report.reused_stages = job.details.get("reused", [])
    if "tile_costs" in job.details:
        report.tiling = {**(report.tiling or {}), "tile_costs": job.details["tile_costs"]}
    job.meter.fill(report)
    return EditResult(image=result, report=report)
