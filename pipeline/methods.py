"""Every method, MobilePicasso and the baselines, as a short composition of the stages.

All methods take the same `EditJob` and return the output image; the report is filled by the
job's meter. `METHODS` is the one registry (CLI, demo, study and benchmark all read it).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.model_sets import ModelSet
from pipeline.report import RunMeter
from pipeline.stages.edit import decode_image, edit_latent, standard_size
from pipeline.stages.projection import project
from pipeline.stages.upscale import decode_tiled, estimate_direct_edit, measure_tile_costs
from pipeline.tiling import choose_tile_size, plan_tiles, run_tiled

Progress = Callable[[str, int, int], None]


class OverBudget(RuntimeError):
    """The method would exceed the time or memory budget; reported, not raised to the user."""


@dataclass
class EditJob:
    models: ModelSet
    image: Image.Image
    instruction: str
    output_size: tuple[int, int]
    seed: int
    steps: int
    text_guidance: float
    image_guidance: float
    meter: RunMeter
    projection: str = "learned"
    tile: int | None = None
    halo: int | None = None
    memory_budget: int | None = None
    time_budget: float | None = None
    progress: Progress = lambda stage, done, total: None
    details: dict[str, Any] = field(default_factory=dict)  # method-specific report fields

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    @property
    def edit_size(self) -> tuple[int, int]:
        info = self.models.info
        return standard_size(*self.image.size, info.edit_resolution, info.edit_multiple)


def _edit(job: EditJob, size: tuple[int, int] | None = None, image: Image.Image | None = None) -> torch.Tensor:
    size = size or job.edit_size
    job.details.setdefault("edit_size", size)
    pipe = job.models.edit_pipeline
    with job.meter.stage("edit"), job.meter.watch(pipe.unet, "edit"):
        return edit_latent(
            pipe, image or job.image, job.instruction, size=size, steps=job.steps, text_guidance=job.text_guidance,
            image_guidance=job.image_guidance, generator=job.generator(),
            on_step=lambda i, n: job.progress("edit", i, n),
        )


def _to_pil(pixels: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    arr = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr[: size[1], : size[0]])


def _tiled_upscale(job: EditJob, mode: str) -> Image.Image:
    latent = _edit(job)
    up = job.models.upscaler
    cond_size = up.condition_size(*job.output_size)
    with job.meter.stage("projection"):
        cond = project(job.models, latent, cond_size, job.projection)
    job.details["projection"] = job.projection
    tile = job.tile
    if tile is None and job.memory_budget is not None:
        halo = up.info.halo if job.halo is None else job.halo
        table = measure_tile_costs(up)
        tile = choose_tile_size(*cond_size, halo, table, align=up.align, memory_budget=job.memory_budget).tile
        job.details["tile_costs"] = [vars(row) for row in table]
    plan = up.plan(cond_size, mode=mode, tile=tile, halo=job.halo)
    job.details["tiling"] = plan.describe()
    with job.meter.stage("upscale"), job.meter.watch(up.unet, "upscale"):
        hr = up.denoise(cond, plan, generator=job.generator(), on_tile=lambda i, n: job.progress("upscale", i, n))
    with job.meter.stage("decode"):
        pixels = up.decode(hr, on_tile=lambda i, n: job.progress("decode", i, n))
    return _to_pil(pixels, job.output_size)


def mobilepicasso(job: EditJob) -> Image.Image:
    return _tiled_upscale(job, "acpt")


def tiled_naive(job: EditJob) -> Image.Image:
    return _tiled_upscale(job, "naive")


def tiled_overlap(job: EditJob) -> Image.Image:
    return _tiled_upscale(job, "overlap")


def ip2p_bicubic(job: EditJob) -> Image.Image:
    latent = _edit(job)
    with job.meter.stage("decode"):
        small = decode_image(job.models.edit_pipeline, latent)
    with job.meter.stage("resize"):
        return small.resize(job.output_size, Image.Resampling.BICUBIC)


def ip2p_realesrgan(job: EditJob) -> Image.Image:
    """Real-ESRGAN x4 passes while they do not overshoot the target by more than 1.5x, then resize."""
    from pipeline.realesrgan import upscale_x4

    latent = _edit(job)
    with job.meter.stage("decode"):
        image = decode_image(job.models.edit_pipeline, latent)
    passes = max(1, round(math.log(max(job.output_size) / max(image.size), 4)))
    job.details["realesrgan_passes"] = passes
    with job.meter.stage("upscale"):
        for _ in range(passes):
            image = upscale_x4(image, on_tile=lambda i, n: job.progress("realesrgan", i, n))
    with job.meter.stage("resize"):
        return image.resize(job.output_size, Image.Resampling.BICUBIC)


def ip2p_direct(job: EditJob) -> Image.Image:
    """Edit at the target resolution directly; refuses (as a reported failure) when over budget."""
    info = job.models.info
    w, h = job.output_size
    f = info.edit_multiple
    size = (math.ceil(w / f) * f, math.ceil(h / f) * f)
    estimate = estimate_direct_edit(job.models, size, job.steps, job.text_guidance, job.image_guidance)
    job.details["estimate"] = estimate
    if job.time_budget is not None and estimate["seconds"] > job.time_budget:
        raise OverBudget(
            f"editing directly at {w}x{h} needs an estimated {estimate['tflops']:.1f} TFLOP "
            f"(~{estimate['seconds']:.0f} s here), over the {job.time_budget:.0f} s time budget"
        )
    latent = _edit(job, size=size)
    pipe = job.models.edit_pipeline
    with job.meter.stage("decode"):
        pixels = decode_tiled(pipe.vae, latent, factor=info.latent_factor, tile=info.decode_tile,
                              halo=info.decode_halo, on_tile=lambda i, n: job.progress("decode", i, n))
    image = _to_pil(pixels, size)
    return image if size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)


def ip2p_patchwise(job: EditJob) -> Image.Image:
    """Cut the target canvas into standard-resolution patches, edit each on its own, stitch."""
    info = job.models.info
    p = info.edit_resolution
    w, h = job.output_size
    rows, cols = math.ceil(h / p), math.ceil(w / p)
    canvas = job.image.resize((cols * p, rows * p), Image.Resampling.LANCZOS)
    plan = plan_tiles(rows * p, cols * p, p, 0, mode="naive")
    job.details["tiling"] = plan.describe()
    pipe = job.models.edit_pipeline
    x = torch.from_numpy(np.array(canvas)).permute(2, 0, 1)[None].float()

    def edit_patches(windows: torch.Tensor) -> torch.Tensor:
        patches = [Image.fromarray(wi.permute(1, 2, 0).byte().numpy()) for wi in windows]
        latents = torch.cat([_edit(job, size=(p, p), image=patch) for patch in patches])
        with job.meter.stage("decode"):
            pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        return (pixels.clamp(-1, 1) + 1) * 127.5

    out = run_tiled(edit_patches, x, plan, batch_size=1, on_tile=lambda i, n: job.progress("patches", i, n))
    stitched = _to_pil(out / 127.5 - 1, (cols * p, rows * p))
    # the canvas is the whole image resized to the patch grid: resize back (a crop would cut and shift it)
    return stitched if stitched.size == (w, h) else stitched.resize((w, h), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    run: Callable[[EditJob], Image.Image]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("mobilepicasso", "edit at standard resolution, learned latent projection, one-step SR with ACPT tiles (0% output overlap)", mobilepicasso),
        Method("ip2p-direct", "InstructPix2Pix run directly at the target resolution (reported as failed when over budget)", ip2p_direct),
        Method("ip2p-bicubic", "edit at standard resolution, decode, bicubic resize to the target", ip2p_bicubic),
        Method("ip2p-realesrgan", "edit at standard resolution, decode, Real-ESRGAN x4plus (real weights), resize to the target", ip2p_realesrgan),
        Method("ip2p-patchwise", "edit each standard-resolution patch of the target canvas independently, stitch", ip2p_patchwise),
        Method("tiled-naive", "MobilePicasso's upscaler on tiles without context (no halo)", tiled_naive),
        Method("tiled-overlap", "MobilePicasso's upscaler on 50%-overlapping tiles blended with positive weights (MultiDiffusion style)", tiled_overlap),
    )
}
