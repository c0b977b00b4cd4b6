"""One benchmark measurement in its own process, so its peak memory is its own.

    python -m pipeline.bench.worker run SPEC.json OUT.json
    python -m pipeline.bench.worker unit SPEC.json OUT.json

`run`: one `edit()` of one SynthEdit test image (cost from the `EditReport`; then, outside the
measured window, the quality metrics against the ground truth, seam visibility and the expected
U-Net evaluation count from the planner's formula). `unit`: the latency, peak memory and FLOPs of
one component call (an upscaler tile batch, an edit U-Net step, a decode tile) for the tiling
suite. The worker prints nothing useful; it writes one JSON file and exits 0 even when the
method failed (the failure is in the JSON). A crash or kill shows up as a missing file.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TILED_MODES = {"mobilepicasso-paper": "acpt", "tiled-naive": "naive", "tiled-overlap": "overlap"}


def expected_unet_evaluations(method: str, models, report, plan=None) -> dict[str, int] | None:
    """U-Net evaluations the planner's formulas predict (one per sample in a batch); None for a failed run.

    edit: steps x (3 with dual classifier-free guidance, else 1), once per edit (ip2p-patchwise:
    once per patch); upscale (tiled methods): upscaler steps x tiles in the plan; none at all where
    `mobilepicasso` answered with a look or the region's colour map (its report has no edit stage).
    """
    from pipeline.stages.edit import uses_cfg

    info = models.info
    if report.failed:
        return None
    if method == "mobilepicasso" and "edit" not in report.stage_seconds and "edit" not in report.reused_stages:
        return {}
    per_edit = report.steps * (3 if uses_cfg(report.text_guidance, report.image_guidance) else 1)
    if method == "ip2p-patchwise":
        rows, cols = report.tiling["grid"]
        return {"edit": per_edit * rows * cols}
    out = {"edit": per_edit}
    if plan is not None:
        out["upscale"] = info.upscaler_steps * plan.n_tiles
    elif method == "mobilepicasso" and report.tiling:  # sparse ACPT: only the tiles the generative region touches
        out["upscale"] = info.upscaler_steps * report.tiling["tiles"]
    return out


def tiled_plan(method: str, models, width: int, height: int, tiling: dict | None):
    """The upscaler's tile plan a tiled method used (rebuilt from the report's tile and halo)."""
    if method not in TILED_MODES or not tiling:
        return None
    up = models.upscaler
    return up.plan(up.condition_size(width, height), mode=TILED_MODES[method], tile=tiling["tile"], halo=tiling["halo"])


def seam_boundaries(method: str, models, width: int, height: int, tiling: dict | None) -> tuple[list[int], list[int]] | None:
    """Output-pixel rows and columns where a method's tiles meet (None for untiled methods)."""
    from pipeline.bench.metrics import seam_lines

    plan = tiled_plan(method, models, width, height, tiling)
    if plan is not None:
        f = models.upscaler.latent_factor
        return seam_lines(plan, f, height, "rows"), seam_lines(plan, f, width, "cols")
    if method == "ip2p-patchwise" and tiling:
        p = models.info.edit_resolution
        rows, cols = tiling["grid"]
        # the canvas (cols*p x rows*p) is resized to the output, so patch edges scale with it
        return ([round(i * p * height / (rows * p)) for i in range(1, rows)],
                [round(j * p * width / (cols * p)) for j in range(1, cols)])
    return None


def realesrgan_flops(edit_size: tuple[int, int], passes: int) -> float:
    """FLOPs of the Real-ESRGAN passes: FLOPs per input pixel (counted on a small window; the
    network is fully convolutional) x the input pixels its tiles evaluate in each pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.realesrgan import load_realesrgan
    from pipeline.tiling import plan_tiles

    model = load_realesrgan()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 16, 16))
    per_pixel = counter.get_total_flops() / 256
    w, h = edit_size
    total = 0.0
    for _ in range(passes):
        total += plan_tiles(h, w, 128, 16, mode="acpt").evaluated_pixels * per_pixel  # upscale_x4's tiling
        w, h = 4 * w, 4 * h
    return total


def weights_fingerprint(models) -> str:
    """A short hash of the model set's weight files (name, size, mtime): shows weights changing mid-benchmark."""
    import hashlib

    from pipeline.model_sets import WEIGHT_SUFFIXES

    if models.path is None:
        return f"{models.info.name}:builtin"
    h = hashlib.sha1()
    for f in sorted(p for p in Path(models.path).rglob("*") if p.suffix in WEIGHT_SUFFIXES):
        st = f.stat()
        h.update(f"{f.relative_to(models.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def do_run(spec: dict) -> dict:
    import torch

    from pipeline import edit, synthedit
    from pipeline.bench import metrics
    from pipeline.bench.runs import Run
    from pipeline.model_sets import load_model_set
    from pipeline.stages.edit import standard_size

    run = Run.from_dict(spec)
    if run.threads:
        torch.set_num_threads(run.threads)
    t0 = time.perf_counter()
    models = load_model_set(run.models)
    load_seconds = time.perf_counter() - t0
    ex = synthedit.sample(run.image.seed, family=run.image.family)
    source = ex.source(run.width, run.height)
    kwargs = dict(method=run.method, size=(run.width, run.height), models=run.models, seed=0, tile=run.tile,
                  halo=run.halo, memory_budget=run.memory_budget, steps=run.steps)
    if run.time_budget is not None:
        kwargs["time_budget"] = run.time_budget
    cpu0 = time.process_time()
    result = edit(source, ex.instruction, **kwargs)  # the measured window: everything below is outside it
    cpu_seconds = time.process_time() - cpu0  # the work, unlike wall time not inflated by other load on the machine
    report = result.report
    out: dict = {"run": spec, "report": report.to_dict(), "load_seconds": load_seconds,
                 "threads": torch.get_num_threads(), "status": "failed" if report.failed else "ok",
                 "cpu_seconds": cpu_seconds,
                 "failure_reason": report.failure_reason, "weights_fingerprint": weights_fingerprint(models)}
    if result.image is not None:
        out["output_sha256"] = metrics.pixels_sha256(result.image)
    plan = tiled_plan(run.method, models, run.width, run.height, report.tiling)
    out["expected_unet_evaluations"] = expected_unet_evaluations(run.method, models, report, plan)
    if run.method == "ip2p-direct":
        from pipeline.costs import estimate_direct_edit

        f = models.info.edit_multiple
        size = (math.ceil(run.width / f) * f, math.ceil(run.height / f) * f)
        est = estimate_direct_edit(models, size, report.steps, report.text_guidance, report.image_guidance)
        out["estimate"] = est  # the same numbers edit() used to accept or refuse the run
        if report.failed:
            out["derived"] = {"total_seconds": est["seconds"], "unet_flops": est["tflops"] * 1e12,
                              "how": "FLOPs counted on a meta-device copy of the edit U-Net at the target size "
                                     "/ this machine's measured U-Net throughput (a real pass at the standard size)"}
    if run.method == "ip2p-realesrgan" and not report.failed:
        passes = max(1, round(math.log(max(run.width, run.height) / max(report.edit_size), 4)))
        out["other_flops"] = {"realesrgan": realesrgan_flops(tuple(report.edit_size), passes)}
    if result.image is None or not run.quality:
        return out

    image = result.image
    target = ex.target(run.width, run.height, artifacts=False)
    mask = ex.edit_mask(run.width, run.height)
    # the standard-resolution edit every upscaling method starts from (also the reference for ip2p-direct and
    # ip2p-patchwise, whose own edits are at other sizes)
    std = standard_size(run.width, run.height, models.info.edit_resolution, models.info.edit_multiple)
    low_res = edit(source, ex.instruction, method="ip2p-bicubic", size=std, models=run.models, seed=0,
                   steps=run.steps).image
    q = {
        "psnr": metrics.psnr(image, target),
        "ssim": metrics.ssim(image, target),
        "psnr_unedited": metrics.psnr(image, target, ~mask),
        "edit_mae": metrics.region_mae(image, target, mask),
        "edit_fraction": float(mask.mean()),
        "lr_consistency": metrics.lr_consistency(image, low_res),
        "brisque": metrics.brisque(image),
        "brisque_target": metrics.brisque(target),
    }
    if models.detector is not None:
        q.update(metrics.artifact_scores(models.detector, image))
    f = models.upscaler.latent_factor
    lines = seam_boundaries(run.method, models, run.width, run.height, report.tiling)
    if lines is not None:  # tiled-latent methods: compare with other latent-pixel edges; patch edges: with all
        s = metrics.seam_visibility(image, *lines, period=f if run.method in TILED_MODES else 1)
        q.update(seam_ratio=s.ratio, seam_boundary=s.boundary, seam_elsewhere=s.elsewhere, seam_lines=s.lines)
    up = models.upscaler
    acpt = seam_boundaries("mobilepicasso-paper", models, run.width, run.height,
                           up.plan(up.condition_size(run.width, run.height), tile=run.tile, halo=run.halo).describe())
    # control: the ACPT core edges measured on every method's output
    q["seam_ratio_acpt_grid"] = metrics.seam_visibility(image, *acpt, period=f).ratio
    out["quality"] = q
    out["quality_views"] = {"brisque": f"centre crop {metrics.BRISQUE_CROP}x{metrics.BRISQUE_CROP} at native resolution",
                            "detector": f"whole frame box-downscaled to long side {metrics.DETECTOR_SIDE}"}
    if spec.get("save_image"):
        image.save(spec["save_image"])
    return out


# ------------------------------------------------------------------------------ component costs


def _meta_copy(obj, unet_attr: str = "unet"):
    """A shallow copy of an upscaler whose U-Net (and tensors) live on the meta device: FLOPs for free."""
    import torch

    clone = copy.copy(obj)
    module = getattr(obj, unet_attr)
    with torch.device("meta"):
        setattr(clone, unet_attr, type(module).from_config(module.config))
    for k, v in vars(obj).items():
        if isinstance(v, torch.Tensor):
            setattr(clone, k, v.to("meta"))
    return clone


def _count_flops(fn, x_shape) -> float | None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"), FlopCounterMode(display=False) as counter, torch.no_grad():
            fn(torch.zeros(x_shape))
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - a model that does not run on meta: no FLOP figure rather than no row
        return None


def _measure(fn, make_input, repeats: int, warm_under: float = 5.0) -> tuple[float, int, int]:
    """(best seconds, peak bytes above the resident set before the call, calls made)."""
    import torch

    from pipeline.report import peak_memory_bytes, reset_peak_memory

    best, peak, calls = math.inf, 0, 0
    with torch.no_grad():
        for i in range(max(1, repeats) + 1):
            x = make_input()
            reset_peak_memory()
            before = _rss()
            t0 = time.perf_counter()
            fn(x)
            seconds = time.perf_counter() - t0
            calls += 1
            peak = max(peak, peak_memory_bytes() - before)
            if i == 0 and seconds > warm_under:
                best = seconds  # a long call: the one-time overhead of the first call is negligible
                break
            if i > 0:
                best = min(best, seconds)
    return best, int(peak), calls


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def do_unit(spec: dict) -> dict:
    """Cost of one component call: kind = upscaler (one batch of `tile`-sized windows at one
    step), edit (one U-Net call of the edit stage at the standard size, CFG batch), decode (one
    batch of decode windows)."""
    import torch

    from pipeline.model_sets import load_model_set
    from pipeline.stages.edit import uses_cfg

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    models = load_model_set(spec["models"])
    info = models.info
    up = models.upscaler
    kind = spec["kind"]
    repeats = spec.get("repeats", 2)
    if kind == "upscaler":
        tile, b = spec["tile"], up.batch_size
        shape = (b, up.latent_channels + up.cond_channels, tile, tile)
        seconds, peak, calls = _measure(lambda x: up.model_output(x, 999), lambda: torch.randn(shape), repeats)
        meta = _meta_copy(up)
        flops = _count_flops(lambda x: meta.model_output(x, 999), shape)
        return {"kind": kind, "tile": tile, "batch": b, "seconds_per_tile": seconds / b, "peak_bytes": peak,
                "flops_per_tile": None if flops is None else flops / b, "calls": calls}
    if kind == "edit":
        pipe = models.edit_pipeline
        unet = pipe.unet
        f = info.latent_factor
        w, h = spec.get("edit_size") or (info.edit_resolution, info.edit_resolution)
        b = 3 if uses_cfg(info.text_guidance, info.image_guidance) else 1
        ctx = pipe.text_encoder.config.hidden_size
        shape = (b, unet.config.in_channels, h // f, w // f)
        e = torch.zeros(b, 77, ctx)
        seconds, peak, calls = _measure(lambda x: unet(x, 999, encoder_hidden_states=e), lambda: torch.randn(shape), repeats)
        with torch.device("meta"):
            meta = type(unet).from_config(unet.config)
        em = e.to("meta")
        flops = _count_flops(lambda x: meta(x, 999, encoder_hidden_states=em), shape)
        return {"kind": kind, "edit_size": [w, h], "batch": b, "seconds_per_evaluation": seconds / b,
                "peak_bytes": peak, "flops_per_evaluation": None if flops is None else flops / b, "calls": calls}
    if kind == "decode":
        vae = up.vae
        tile, b = info.decode_tile, up.batch_size
        c = vae.config.latent_channels
        sf = vae.config.scaling_factor
        shape = (b, c, tile, tile)
        seconds, peak, calls = _measure(lambda x: vae.decode(x / sf).sample, lambda: torch.randn(shape), repeats)
        return {"kind": kind, "tile": tile, "batch": b, "seconds_per_tile": seconds / b, "peak_bytes": peak, "calls": calls}
    if kind == "describe":
        return {"kind": kind, "name": info.name, "trained": info.trained, "untrained": list(info.untrained),
                "align": up.align, "latent_factor": up.latent_factor, "tile_sizes": list(info.tile_sizes),
                "tile": info.tile, "halo": info.halo, "decode_tile": info.decode_tile, "decode_halo": info.decode_halo,
                "upscaler_steps": info.upscaler_steps, "steps": info.steps,
                "cfg_batch": 3 if uses_cfg(info.text_guidance, info.image_guidance) else 1,
                "edit_resolution": info.edit_resolution, "edit_multiple": info.edit_multiple,
                "batch_size": up.batch_size, "upscaler": type(up).__name__}
    if kind == "flops":  # exact upscaler FLOPs per window shape, on the meta device
        meta = _meta_copy(up)
        c = up.latent_channels + up.cond_channels
        return {"kind": kind, "flops": {f"{h}x{w}": _count_flops(lambda x: meta.model_output(x, 999), (1, c, h, w))
                                        for h, w in spec["shapes"]}}
    if kind == "direct":  # ip2p-direct's estimate at each output size (what edit() uses to refuse it)
        from pipeline.costs import estimate_direct_edit

        f = info.edit_multiple
        rows = {}
        for w, h in spec["sizes"]:
            size = (math.ceil(w / f) * f, math.ceil(h / f) * f)
            rows[f"{w}x{h}"] = estimate_direct_edit(models, size, spec.get("steps") or info.steps, info.text_guidance,
                                                    info.image_guidance)
        return {"kind": kind, "estimates": rows}
    if kind == "passes":  # ip2p-direct's U-Net call (CFG batch) timed at several sizes, in CPU seconds: its calibration
        from pipeline.report import FLOP_FORMULAS
        from torch.utils.flop_counter import FlopCounterMode

        unet = models.edit_pipeline.unet
        f, m = info.latent_factor, info.edit_multiple
        b = 3 if uses_cfg(info.text_guidance, info.image_guidance) else 1
        e = torch.zeros(b, 77, models.edit_pipeline.text_encoder.config.hidden_size)
        with torch.device("meta"):
            meta = type(unet).from_config(unet.config)
        rows = []
        for w, h in spec["sizes"]:
            w, h = math.ceil(w / m) * m, math.ceil(h / m) * m  # as ip2p-direct rounds the output size
            shape = (b, unet.config.in_channels, h // f, w // f)
            with torch.no_grad():
                unet(torch.randn(shape), 999, encoder_hidden_states=e)  # warm-up: a shape's first call carries setup
                cpu, wall = math.inf, math.inf
                for _ in range(max(1, repeats)):
                    x = torch.randn(shape)
                    c0, t0 = time.process_time(), time.perf_counter()
                    unet(x, 999, encoder_hidden_states=e)
                    cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - t0)
            with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter, torch.no_grad():
                meta(torch.zeros(shape, device="meta"), 999, encoder_hidden_states=e.to("meta"))
            rows.append({"width": w, "height": h, "batch": b, "cpu_seconds_per_call": cpu, "wall_seconds_per_call": wall,
                         "flops_per_call": float(counter.get_total_flops()), "calls": 1 + max(1, repeats)})
        return {"kind": kind, "steps": info.steps, "passes": rows}
    if kind == "batch":  # several units in this one process (the --quick suite: fewer process starts)
        return {"kind": kind, "items": [do_unit({**item, "models": spec["models"], "threads": spec.get("threads")})
                                        for item in spec["items"]]}
    raise ValueError(f"unknown unit kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("run", "unit"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    t0 = time.perf_counter()
    try:
        result = do_run(spec) if mode == "run" else do_unit(spec)
    except MemoryError as err:
        result = {"status": "failed", "failure_reason": f"out of memory: {err}"}
    except Exception as err:  # noqa: BLE001 - every failure becomes a row
        result = {"status": "failed", "failure_reason": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc(limit=8)}
    result["worker_seconds"] = time.perf_counter() - t0
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=float))
    tmp.replace(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
