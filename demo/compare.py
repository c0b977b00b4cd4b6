"""Run several methods on one input, keep every full-resolution output on disk, and describe them.

Plain functions, no Gradio: the Edit tab calls them and tests call them directly. Outputs are
written once as PNG (never re-encoded afterwards); the tab shows small PNG previews and
full-resolution crops cut from the files, because a 4K image cannot be judged at screen size.
"""
from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

import pipeline
from pipeline.inputs import check_instruction, load_image, parse_size

PREVIEW_LONG_SIDE = 1280
PNG_COMPRESS_LEVEL = 4   # 4K outputs: zlib level 6 (the default) is several seconds slower for ~5 % smaller files
KEEP_RUNS = 8            # older run folders are deleted so a long-running Space does not fill its disk

StepCallback = Callable[[str, str, int, int], None]  # method, stage, done, total


@dataclass
class MethodOutput:
    method: str
    report: dict
    path: Path | None = None       # full-resolution PNG
    preview: Path | None = None    # long side PREVIEW_LONG_SIDE, PNG
    error: str | None = None       # why there is no image (over budget, out of memory, a bug)

    @property
    def ok(self) -> bool:
        return self.path is not None


@dataclass
class Comparison:
    run_dir: Path
    source: Path                   # the input as given (any size)
    source_preview: Path           # the input resized to the output's preview size
    output_size: tuple[int, int]
    outputs: list[MethodOutput] = field(default_factory=list)

    def get(self, method: str) -> MethodOutput | None:
        return next((o for o in self.outputs if o.method == method), None)

    def to_state(self) -> dict:
        return {
            "run_dir": str(self.run_dir), "source": str(self.source), "source_preview": str(self.source_preview),
            "output_size": list(self.output_size),
            "outputs": [{"method": o.method, "path": o.path and str(o.path), "preview": o.preview and str(o.preview),
                         "error": o.error, "report": o.report} for o in self.outputs],
        }

    @classmethod
    def from_state(cls, state: dict) -> Comparison:
        outputs = [MethodOutput(o["method"], o["report"], o["path"] and Path(o["path"]),
                                o["preview"] and Path(o["preview"]), o["error"]) for o in state["outputs"]]
        return cls(Path(state["run_dir"]), Path(state["source"]), Path(state["source_preview"]),
                   tuple(state["output_size"]), outputs)


def preview_size(size: tuple[int, int], long_side: int = PREVIEW_LONG_SIDE) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, long_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def save_png(image: Image.Image, path: Path) -> Path:
    image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return path


def new_run_dir(root: Path, keep: int = KEEP_RUNS) -> Path:
    """A fresh folder under `root/runs`, deleting all but the newest `keep - 1` older ones."""
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir())[: max(0, len(list(runs.iterdir())) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    run = runs / f"{time.time_ns():020d}"  # names sort in creation order
    run.mkdir()
    return run


def run_comparison(
    image_path: str | Path, instruction: str, methods: list[str], *, size: str, models: str, seed: int,
    steps: int | None, text_guidance: float | None, image_guidance: float | None, root: Path,
    on_step: StepCallback | None = None, device: str | None = None, dtype: str | None = None,
) -> Comparison:
    """Run each method in turn. Bad input raises `pipeline.InputError` before any work; a method
    that fails (over budget, out of memory, or an unexpected error) is recorded in its output and
    the others still run."""
    if not methods:
        raise pipeline.InputError("choose at least one method")
    unknown = [m for m in methods if m not in pipeline.METHODS]
    if unknown:
        raise pipeline.InputError(f"unknown method {unknown[0]!r}; choose from {', '.join(pipeline.METHODS)}")
    source = load_image(image_path)
    check_instruction(instruction)
    output_size = parse_size(size, source.size)
    run = new_run_dir(root)
    comparison = Comparison(run, Path(image_path), save_png(source.resize(preview_size(output_size), Image.Resampling.LANCZOS),
                                                            run / "input-preview.png"), output_size)
    for method in methods:
        progress = (lambda stage, done, total, m=method: on_step(m, stage, done, total)) if on_step else None
        try:
            result = pipeline.edit(source, instruction, method=method, size=output_size, models=models, seed=seed,
                                   steps=steps, text_guidance=text_guidance, image_guidance=image_guidance,
                                   progress=progress, device=device, dtype=dtype)
        except pipeline.InputError:
            raise
        except Exception as err:  # one broken method must not hide the others' results
            traceback.print_exc()
            comparison.outputs.append(MethodOutput(method, {}, error=f"error: {type(err).__name__}: {err}"))
            continue
        report = result.report.to_dict()
        out = MethodOutput(method, report)
        if result.image is None:
            out.error = result.report.failure_reason or "failed"
        else:
            out.path = save_png(result.image, run / f"{method}.png")
            out.preview = save_png(result.image.resize(preview_size(output_size), Image.Resampling.LANCZOS),
                                   run / f"{method}-preview.png")
            (run / f"{method}.json").write_text(json.dumps(report, indent=2, default=str))
        comparison.outputs.append(out)
    return comparison


# -- what each column shows -------------------------------------------------------------------

def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def _parts(d: dict, fmt: str) -> str:
    return " · ".join(f"{k} {fmt.format(v)}" for k, v in d.items())


def metrics_markdown(out: MethodOutput) -> str:
    """Latency, peak memory, U-Net evaluations and tiles of one method, as a short Markdown block."""
    r = out.report
    lines = [f"### {out.method}"]
    if out.error:
        lines.append(f"**Failed:** {out.error}")
    if not r:
        return "\n\n".join(lines)
    if out.ok:
        w, h = r["output_size"]
        lines.append(f"**Output** {w}×{h}")
    lines.append(f"**Latency** {r['total_seconds']:.1f} s" + (f"  \n<small>{_parts(r['stage_seconds'], '{:.1f} s')}</small>"
                                                              if r.get("stage_seconds") else ""))
    measure = r.get("peak_memory_measure", "")
    lines.append(f"**Peak memory** {_gb(r['peak_memory_bytes'])}" + (f"  \n<small>{measure}</small>" if measure else ""))
    evals = r.get("unet_evaluations") or {}
    lines.append(f"**U-Net evaluations** {r['total_unet_evaluations']}" + (f"  \n<small>{_parts(evals, '{}')}</small>"
                                                                           if evals else ""))
    tiling = r.get("tiling")
    if tiling and "tiles" in tiling:
        grid = "×".join(str(g) for g in tiling.get("grid", []))
        halo = f" + halo {tiling['halo']}" if tiling.get("halo") else ""
        lines.append(f"**Tiles** {tiling['tiles']}  \n<small>{tiling.get('mode', '')} grid {grid}, "
                     f"tile {tiling.get('tile')}{halo} (latent px)</small>")
    else:
        lines.append("**Tiles** none (whole image)")
    return "\n\n".join(lines)


def summary_markdown(c: Comparison, seconds: float | None = None) -> str:
    ok = [o for o in c.outputs if o.ok]
    w, h = c.output_size
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    methods = "method" if len(c.outputs) == 1 else "methods"
    text = f"**Done{took}:** {len(ok)} of {len(c.outputs)} {methods} produced a {w}×{h} image."
    failed = [o.method for o in c.outputs if not o.ok]
    if failed:
        text += f" Failed: {', '.join(failed)} (reasons under the results)."
    return text


def failed_line(c: Comparison) -> str:
    """Every failed method on one line, with its reason (they get no result tile)."""
    failed = [o for o in c.outputs if not o.ok]
    if not failed:
        return ""
    return "**Failed:** " + " · ".join(f"`{o.method}`: {o.error or 'failed'}" for o in failed)


def progress_text(method: str, stage: str, done: int, total: int, index: int, count: int) -> str:
    """'[1/3] mobilepicasso: upscale tile 12/40' (steps for the edit stage, tiles otherwise)."""
    unit = "step" if stage == "edit" else "patch" if stage == "patches" else "tile"
    prefix = f"[{index}/{count}] " if count > 1 else ""
    return f"{prefix}{method}: {stage} {unit} {done}/{total}"


# -- synchronised zoom ----------------------------------------------------------------------

def crop_box(size: tuple[int, int], x_pct: float, y_pct: float, window: int) -> tuple[int, int, int, int]:
    """A `window`-pixel square (clipped to the image) centred at (x %, y %) of an image of `size`."""
    w, h = size
    side_w, side_h = min(window, w), min(window, h)
    x0 = int(min(max(x_pct / 100 * w - side_w / 2, 0), w - side_w))
    y0 = int(min(max(y_pct / 100 * h - side_h / 2, 0), h - side_h))
    return x0, y0, x0 + side_w, y0 + side_h


@lru_cache(maxsize=8)
def _pixels(path: str, mtime: float) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def pixels(path: Path) -> np.ndarray:
    """Decoded full-resolution output, cached: every zoom click crops the same few files."""
    return _pixels(str(path), path.stat().st_mtime)


def zoom(c: Comparison, x_pct: float, y_pct: float, window: int) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The same full-resolution crop from every output, plus the input's matching region resized
    (Lanczos) to the crop size as the reference."""
    box = crop_box(c.output_size, x_pct, y_pct, window)
    crops = {o.method: pixels(o.path)[box[1]:box[3], box[0]:box[2]] for o in c.outputs if o.ok}
    reference = None
    try:
        with Image.open(c.source) as src:
            src = load_image(src)
            sx, sy = src.width / c.output_size[0], src.height / c.output_size[1]
            region = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            reference = np.asarray(src.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS, box=region))
    except (OSError, pipeline.InputError):
        pass
    return reference, crops


def preview_with_box(preview: Path, output_size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The preview with the zoom region (a box in output pixels) outlined, so every tile shows
    where its 1:1 crop comes from."""
    from PIL import ImageDraw

    with Image.open(preview) as img:
        img = img.convert("RGB")
    sx, sy = img.width / output_size[0], img.height / output_size[1]
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx - 1, box[3] * sy - 1
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 320))
    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=width + 2)
    draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), outline=(255, 196, 0), width=width)
    return np.asarray(img)


def box_caption(c: Comparison, x_pct: float, y_pct: float, window: int) -> str:
    x0, y0, x1, y1 = crop_box(c.output_size, x_pct, y_pct, window)
    w, h = c.output_size
    return f"Zoom: pixels ({x0}, {y0}) to ({x1}, {y1}) of {w}×{h}, shown 1:1 from every output."
