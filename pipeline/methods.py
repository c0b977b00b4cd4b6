"""Every method, MobilePicasso and the baselines, as a short composition of the stages.

All methods take the same `EditJob` and return the output image; the report is filled by the
job's meter. `METHODS` is the one registry (CLI, demo, study and benchmark all read it).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.costs import MemoryPlan, OverBudget, estimate_direct_edit, plan_memory
from pipeline.model_set import ModelSet
from pipeline.report import RunMeter
from pipeline.stages.compose import (
    Origins,
    colour_support,
    compose,
    decide_origins,
    dilate,
    guided_upsample,
    luma,
    upsample,
)
from pipeline.stages.edit import (
    KeepOutside,
    decode_image,
    edit_latent,
    source_latent,
    standard_size,
)
from pipeline.stages.fill import RING_SCALE, fill_from_surround, removal_alpha
from pipeline.stages.look import LOOK_THRESHOLD, apply_look, predict_look
from pipeline.stages.projection import project
from pipeline.stages.region import REGION_THRESHOLD, EditRegion, edit_region
from pipeline.stages.transfer import fit_affine_colour, fit_residual
from pipeline.stages.upscale import decode_tiled, decode_window
from pipeline.tiling import plan_tiles, restrict_to, run_tiled

Progress = Callable[[str, int, int], None]
CORE_THRESHOLD = 0.9  # the region's confident core, whose colours say what the region is made of


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
    origins: str = "auto"  # mobilepicasso ablation: "edit" (mask only), "transfer" (no generative path), "auto"
    use_look: bool = True  # mobilepicasso ablation: False sends global looks through the editor too
    use_colour_map: bool = True  # mobilepicasso ablation: False ignores the region model's colour map
    use_fill: bool = True  # mobilepicasso ablation: False sends removals through the editor too
    memo: dict | None = None  # shared by several methods on one input: the edit stage runs once per setting
    details: dict[str, Any] = field(default_factory=dict)  # method-specific report fields

    def fill(self, report) -> None:
        """Copy what the method recorded (and the meter's measurements) into its `EditReport`."""
        d = self.details
        report.edit_size = d.get("edit_size", report.edit_size)
        report.projection, report.tiling = d.get("projection"), d.get("tiling")
        report.region, report.note, report.reused_stages = d.get("region"), d.get("note"), d.get("reused", [])
        report.memory_plan = d.get("memory_plan")
        self.meter.fill(report)

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    @property
    def edit_size(self) -> tuple[int, int]:
        info = self.models.info
        return standard_size(*self.image.size, info.edit_resolution, info.edit_multiple)


def _edit(job: EditJob, size: tuple[int, int] | None = None, image: Image.Image | None = None,
          keep_outside: KeepOutside | None = None) -> torch.Tensor:
    size = size or job.edit_size
    job.details.setdefault("edit_size", size)
    pipe = job.models.edit_pipeline
    key = None
    if job.memo is not None and image is None:
        mask = None if keep_outside is None else keep_outside.mask.numpy().tobytes()
        digest = hashlib.blake2b(job.image.tobytes(), digest_size=16).hexdigest()
        key = ("edit", digest, job.instruction, size, job.steps, job.text_guidance, job.image_guidance, job.seed, mask)
        if key in job.memo:
            job.details["reused"] = [*job.details.get("reused", []), "edit"]
            return job.memo[key]
    with job.meter.stage("edit"), job.meter.watch(pipe.unet, "edit"):
        latent = edit_latent(
            pipe, image or job.image, job.instruction, size=size, steps=job.steps, text_guidance=job.text_guidance,
            image_guidance=job.image_guidance, generator=job.generator(),
            on_step=lambda i, n: job.progress("edit", i, n), keep_outside=keep_outside,
        )
    if key is not None:
        job.memo[key] = latent
    return latent


def _pixels01(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)[None]


def source_at_output(job: EditJob) -> np.ndarray:
    """The source's own pixels at the output size (resized only when the sizes differ), uint8 (H, W, 3)."""
    image = job.image if job.image.size == job.output_size else job.image.resize(job.output_size, Image.Resampling.LANCZOS)
    return np.asarray(image.convert("RGB"))


def _to_pil(pixels: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """Pixels in [-1, 1] to an image, in place: a 4K float frame is 100 MB, each temporary another 100."""
    x = pixels[0, :, : size[1], : size[0]].float().cpu()
    x = x.clamp_(-1, 1).add_(1).mul_(127.5).round_()
    return Image.fromarray(x.to(torch.uint8).permute(1, 2, 0).numpy())


def _memory_plan(job: EditJob) -> MemoryPlan | None:
    """Windows and batches for the whole run under `job.memory_budget` (None: the set's defaults)."""
    if job.memory_budget is None:
        return None
    up = job.models.upscaler
    plan = plan_memory(up, job.output_size, job.memory_budget, max_sr_window=max(up.info.tile_sizes) ** 2,
                       max_decode_window=decode_window(up.info))
    job.details["memory_plan"] = plan.describe()
    return plan


def _tiled_upscale(job: EditJob, mode: str) -> Image.Image:
    latent = _edit(job)
    up = job.models.upscaler
    cond_size = up.condition_size(*job.output_size)
    budget = _memory_plan(job)
    with job.meter.stage("projection"):
        cond = project(job.models, latent, cond_size, job.projection)
    job.details["projection"] = job.projection
    plan = up.plan(cond_size, mode=mode, tile=job.tile, halo=job.halo,
                   max_window=budget.sr_window if budget else None)
    job.details["tiling"] = plan.describe()
    with job.meter.stage("upscale"), job.meter.watch(up.unet, "upscale"):
        hr = up.denoise(cond, plan, generator=job.generator(), on_tile=lambda i, n: job.progress("upscale", i, n),
                        batch_size=budget.sr_batch if budget else None)
    with job.meter.stage("decode"):
        pixels = up.decode(hr, on_tile=lambda i, n: job.progress("decode", i, n),
                           max_window=budget.decode_window if budget else None,
                           batch_size=budget.decode_batch if budget else None)
    return _to_pil(pixels, job.output_size)


def mobilepicasso_paper(job: EditJob) -> Image.Image:
    return _tiled_upscale(job, "acpt")


def _generative(job: EditJob, latent: torch.Tensor, origins: Origins) -> np.ndarray:
    """The paper's path (projection, one-step SR, decode) on only the ACPT tiles whose cores touch the
    generative region: (H, W, 3) float pixels in [0, 1], valid where that region is."""
    models, up = job.models, job.models.upscaler
    cond_size = up.condition_size(*job.output_size)
    with job.meter.stage("projection"):
        cond = project(models, latent, cond_size, job.projection)
    need = torch.from_numpy(upsample(origins.generative, (cond_size[1], cond_size[0])) > 0)
    need = dilate(need[None, None].float(), 1)[0, 0] > 0
    budget = _memory_plan(job)
    plan = restrict_to(up.plan(cond_size, mode="acpt", tile=job.tile, halo=job.halo,
                               max_window=budget.sr_window if budget else None), need)
    job.details["tiling"] = plan.describe()
    with job.meter.stage("upscale"), job.meter.watch(up.unet, "upscale"):
        hr = up.denoise(cond, plan, generator=job.generator(), on_tile=lambda i, n: job.progress("upscale", i, n),
                        batch_size=budget.sr_batch if budget else None)
    with job.meter.stage("decode"):
        pixels = up.decode(hr, need=need, on_tile=lambda i, n: job.progress("decode", i, n),
                           max_window=budget.decode_window if budget else None,
                           batch_size=budget.decode_batch if budget else None)
    w, h = job.output_size
    return ((pixels[0, :, :h, :w].float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def _source_border(job: EditJob, found: EditRegion, origins: Origins, small: torch.Tensor, crop: np.ndarray,
                   window: tuple[int, int, int, int]) -> np.ndarray:
    """The region over `window` at the output size, its border on the source's edges (guided filter);
    a learned region of a thing already there also keeps to the colours of its confident core
    (`colour_support`): everywhere, or (setting "border") only in a band of one edit-size pixel
    either side of its border, so that the texture inside a region (a background's mortar) stays in it."""
    small_hwc = small[0].permute(1, 2, 0).numpy()
    region = guided_upsample(origins.region, luma(small_hwc), luma(crop), size=job.output_size, window=window)
    mode = job.models.info.colour_support
    if mode != "off" and found.colour is not None and not found.adds_new_shape:
        support = colour_support(found.mask[0, 0].numpy() > CORE_THRESHOLD, small_hwc, crop,
                                 fraction=job.models.info.support_fraction)
        if mode == "border":
            sure = -dilate(-(found.mask > CORE_THRESHOLD).float(), 1)[0, 0].numpy()  # the core less one pixel
            support = np.maximum(support, upsample(sure, job.output_size, window) >= 1 - 1e-6)
        region *= support
    return region


@dataclass
class RegionFrame:
    """What the colour-map and fill paths share: the source at the edit size (`small`, (1, 3, h, w) in
    [0, 1]) and at the output size, the binarised region, the output box it can reach and that box of
    the source in [0, 1]."""

    small: torch.Tensor
    origins: Origins
    source: np.ndarray
    window: tuple[int, int, int, int]
    crop: np.ndarray


def _region_frame(job: EditJob, found: EditRegion, margin: int = 3) -> RegionFrame:
    small = _pixels01(job.image.resize(job.edit_size, Image.Resampling.LANCZOS))
    inside_mask = (found.mask > REGION_THRESHOLD).float()[0, 0].numpy()
    origins = Origins(region=inside_mask, generative=np.zeros_like(inside_mask))
    source = source_at_output(job)
    window = origins.bounds(job.output_size, margin=margin)
    x0, y0, x1, y1 = window
    return RegionFrame(small, origins, source, window, source[y0:y1, x0:x1].astype(np.float32) / 255.0)


def _compose_frame(job: EditJob, frame: RegionFrame, region_full: np.ndarray, inside: np.ndarray,
                   note: str) -> Image.Image:
    job.details["region"] = frame.origins.shares()
    job.details["note"] = note
    with job.meter.stage("compose"):
        return Image.fromarray(compose(frame.source, region_full, inside, frame.window))


def _region_colour_map(job: EditJob, found: EditRegion) -> Image.Image:
    """A recolour, a new background or an added flat shape: the region model's colour map of the region
    applied to the full-resolution source inside it. Neither the editor nor the upscaler runs."""
    with job.meter.stage("transfer"):
        f = _region_frame(job, found)
        if found.adds_new_shape:  # its border is the region's own, sharpened at the output size; one colour
            soft = upsample(found.mask[0, 0].numpy(), job.output_size, f.window)
            region_full = np.clip((soft - REGION_THRESHOLD) * job.models.info.new_edge_gain + 0.5, 0.0, 1.0)
            inside = apply_look(found.new_shape_colour(), f.crop)
        else:  # a thing already there
            region_full = _source_border(job, found, f.origins, f.small, f.crop, f.window)
            inside = apply_look(found.colour, f.crop)
    return _compose_frame(job, f, region_full, inside,
                          f"the region is one colour map of the source (p = {float(found.colour.probability):.2f}): "
                          "the region model's map applied to the source inside it; no editor or upscaler run")


def _region_fill(job: EditJob, found: EditRegion) -> Image.Image:
    """A removal (the region model says the region is neither a colour map nor a new shape): the region
    filled with its surround at the output size (`pipeline.stages.fill`). Neither the editor nor the
    upscaler runs."""
    with job.meter.stage("transfer"):
        f = _region_frame(job, found, margin=3 + math.ceil(3 * RING_SCALE))  # the ring and beyond
        scale = max(job.output_size) / max(job.edit_size)
        region_full = removal_alpha(_source_border(job, found, f.origins, f.small, f.crop, f.window))
        inside = fill_from_surround(f.crop, region_full, ring=max(1, round(RING_SCALE * scale)))
    return _compose_frame(job, f, region_full, inside,
                          "a removal: the region filled with its surround's own pixels continued inward; "
                          "no editor or upscaler run")


def mobilepicasso(job: EditJob) -> Image.Image:
    """Edit only what the instruction names; keep every other pixel of the source; spend the upscaler
    only where the edit made something new (see `pipeline.stages.compose`). A global tone look, where
    the set has a look model, is one colour map of the source (`pipeline.stages.look`); where the set
    has a region model, a region that is one colour map is that map of the source, and a removal is
    its surround continued inward (`pipeline.stages.fill`)."""
    models, info = job.models, job.models.info
    pipe = models.edit_pipeline
    size = job.edit_size
    if job.use_look:
        with job.meter.stage("look"):
            look = predict_look(models, job.image, job.instruction)
        if look is not None and float(look.probability) >= LOOK_THRESHOLD:
            job.details["region"] = {"source": 0.0, "transfer": 1.0, "generative": 0.0}
            job.details["note"] = (f"a global look (p = {float(look.probability):.2f}): one colour map applied to "
                                   "every pixel of the source; no editor or upscaler run")
            with job.meter.stage("transfer"):
                return Image.fromarray(apply_look(look, source_at_output(job)))
    with job.meter.stage("region"):
        found = edit_region(models, job.image, job.instruction, size, generator=job.generator())
    region = found.mask
    if not bool((region > REGION_THRESHOLD).any()):
        job.details["region"] = {"source": 1.0, "transfer": 0.0, "generative": 0.0}
        job.details["note"] = "the instruction names nothing found in the image: the source is returned unchanged"
        return Image.fromarray(source_at_output(job))
    if job.use_colour_map and job.origins != "edit" and found.is_colour_map:
        return _region_colour_map(job, found)
    if job.use_fill and job.origins != "edit" and found.is_removal:
        return _region_fill(job, found)
    keep = None
    if info.blend_latents:
        f = info.latent_factor
        cells = F.adaptive_max_pool2d(dilate((region > REGION_THRESHOLD).float(), 2), (size[1] // f, size[0] // f))
        keep = KeepOutside(cells, source_latent(pipe, job.image, size), job.generator())
    latent = _edit(job, keep_outside=keep)
    with job.meter.stage("decode"):
        edited = (decode_image(pipe, latent))
    with job.meter.stage("transfer"):
        small = _pixels01(job.image.resize(size, Image.Resampling.LANCZOS))
        colours = fit_affine_colour(small, _pixels01(edited))
        origins = decide_origins(region, fit_residual(small, _pixels01(edited), colours),
                                 residual_threshold=info.residual_threshold)
        source = source_at_output(job)
        window = origins.bounds(job.output_size)  # every full-resolution step runs on this box only
        x0, y0, x1, y1 = window
        crop = source[y0:y1, x0:x1].astype(np.float32) / 255.0
        region_full = _source_border(job, found, origins, small, crop, window)
        if job.origins == "edit":  # ablation: the mask alone, the decoded edit resized inside it
            inside = np.asarray(edited.resize(job.output_size, Image.Resampling.BICUBIC), np.float32)[y0:y1, x0:x1] / 255.0
        else:
            inside = colours.apply(crop, job.output_size, window)
    shares = origins.shares()
    if job.origins == "auto" and origins.generative.any():
        gen = _generative(job, latent, origins)
        g = upsample(origins.generative, job.output_size, window)[..., None]
        inside += g * (gen[y0:y1, x0:x1] - inside)
        shares["generative_tiles"] = job.details["tiling"]["tiles"]
        shares["skipped_tiles"] = job.details["tiling"]["skipped"]
    job.details["region"] = shares
    with job.meter.stage("compose"):
        return Image.fromarray(compose(source, region_full, inside, window))


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


def ip2p_composite(job: EditJob) -> Image.Image:
    """Classical compositing: `ip2p-bicubic` pasted into the source where the decoded edit differs from
    the decoded source by more than the set's `composite_threshold` (chosen on the validation split)."""
    pipe = job.models.edit_pipeline
    latent = _edit(job)
    with job.meter.stage("decode"):
        edited = decode_image(pipe, latent)
        reconstructed = decode_image(pipe, source_latent(pipe, job.image, job.edit_size))
    with job.meter.stage("compose"):
        diff = (_pixels01(edited) - _pixels01(reconstructed)).abs().amax(1)[0].numpy()
        changed = (diff > job.models.info.composite_threshold).astype(np.float32)
        source = source_at_output(job)
        inside = np.asarray(edited.resize(job.output_size, Image.Resampling.BICUBIC), np.float32) / 255.0
        return Image.fromarray(compose(source, upsample(changed, job.output_size), inside))


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
        pixels = decode_tiled(pipe.vae, latent, factor=info.latent_factor, halo=info.decode_halo,
                              max_window=decode_window(info), on_tile=lambda i, n: job.progress("decode", i, n))
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
        Method("mobilepicasso", "edit only where the instruction points: source pixels outside, colour edits transferred onto the full-resolution source (a global look as one colour map), one-step SR with sparse ACPT tiles only where the edit drew something new", mobilepicasso),
        Method("mobilepicasso-paper", "the paper's dense form: edit at standard resolution, learned latent projection, one-step SR with ACPT tiles (0% output overlap) over the whole frame", mobilepicasso_paper),
        Method("ip2p-direct", "InstructPix2Pix run directly at the target resolution (reported as failed when over budget)", ip2p_direct),
        Method("ip2p-bicubic", "edit at standard resolution, decode, bicubic resize to the target", ip2p_bicubic),
        Method("ip2p-realesrgan", "edit at standard resolution, decode, Real-ESRGAN x4plus (real weights), resize to the target", ip2p_realesrgan),
        Method("ip2p-composite", "ip2p-bicubic pasted into the source where the decoded edit differs from the decoded source", ip2p_composite),
        Method("ip2p-patchwise", "edit each standard-resolution patch of the target canvas independently, stitch", ip2p_patchwise),
        Method("tiled-naive", "MobilePicasso's upscaler on tiles without context (no halo)", tiled_naive),
        Method("tiled-overlap", "MobilePicasso's upscaler on 50%-overlapping tiles blended with positive weights (MultiDiffusion style)", tiled_overlap),
    )
}
