"""`python -m pipeline`: edit an image, list the methods, run the benchmark.

    python -m pipeline edit study/items/cat.jpg -i "make it snowy" --size 1024 --out edited.png
    python -m pipeline edit study/items/cat.jpg -i "make it snowy" --method ip2p-bicubic --size 4k --quiet
    python -m pipeline methods
    python -m pipeline bench --quick --out /tmp/bench
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class StageProgress:
    """A tqdm bar per stage, named "stage" and counting steps or tiles."""

    def __init__(self) -> None:
        self.bar = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage or self.bar is None or done < self.bar.n:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="tile" if stage not in ("edit",) else "step", leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet_libraries() -> None:
    """--quiet: the libraries' own bars too (transformers shows one while it loads weights)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # also the Hub's
    diffusers_logging.disable_progress_bar()


def cmd_edit(args: argparse.Namespace) -> int:
    from pipeline import InputError, ModelSetUnavailable, edit

    if args.quiet:
        quiet_libraries()
    progress = StageProgress()
    try:
        result = edit(
            args.image, args.instruction, method=args.method, size=args.size, models=args.models, seed=args.seed,
            steps=args.steps, text_guidance=args.text_guidance, image_guidance=args.image_guidance,
            projection=args.projection, tile=args.tile, halo=args.halo, memory_budget=args.memory_budget,
            time_budget=args.time_budget, progress=None if args.quiet else progress,
            device=args.device, dtype=args.dtype,
        )
    except (InputError, ModelSetUnavailable, MemoryError) as err:
        progress.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    progress.close()
    report = result.report
    if args.report:
        Path(args.report).write_text(report.to_json() + "\n")
    if result.image is None:
        print(f"error: {report.method} failed: {report.failure_reason}", file=sys.stderr)
        return 3
    try:
        result.image.save(args.out)
    except (OSError, ValueError) as err:
        print(f"error: cannot write {args.out}: {err}", file=sys.stderr)
        return 2
    if not report.model_set_trained:
        print(f"note: model set {report.model_set!r} is UNTRAINED (random weights): the output is not a real edit",
              file=sys.stderr)
    if args.quiet:
        return 0
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in report.stage_seconds.items())
    print(f"{args.out}: {report.output_size[0]}x{report.output_size[1]} by {report.method} in {report.total_seconds:.1f}s "
          f"({stages}); peak memory {report.peak_memory_bytes / 2**20:.0f} MiB; "
          f"{report.total_unet_evaluations} U-Net evaluations")
    return 0


def cmd_methods(_args: argparse.Namespace) -> int:
    from pipeline.methods import METHODS

    width = max(map(len, METHODS))
    for m in METHODS.values():
        print(f"{m.name:<{width}}  {m.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pipeline.inputs import parse_bytes
    from pipeline.methods import METHODS

    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("edit", help="edit one image", description="Edit one image and write the result.\n\n"
                            "    python -m pipeline edit study/items/cat.jpg -i \"make it snowy\" --size 1024 --out edited.png",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="input image file (e.g. study/items/cat.jpg, which `python -m study.stimuli` writes)")
    p.add_argument("--instruction", "-i", required=True, help="what to change, in words (e.g. \"make it snowy\")")
    p.add_argument("--method", default="mobilepicasso", choices=list(METHODS),
                   help="default mobilepicasso; `python -m pipeline methods` describes each")
    p.add_argument("--size", default="4k", help="4k | 2k | 1k | long side (e.g. 2048) | WxH (exact)")
    p.add_argument("--models", default="mini", help="mini | sd15 | sd15-arch | path to a model-set folder")
    p.add_argument("--seed", type=int, default=0, help="random seed of the edit's noise (default 0: the same output "
                                                        "every run)")
    p.add_argument("--steps", type=int, help="denoising steps of the edit (default: the model set's, 20 for mini)")
    p.add_argument("--text-guidance", type=float, help="classifier-free guidance scale on the instruction: higher "
                                                       "follows it more strongly (default: the model set's)")
    p.add_argument("--image-guidance", type=float, help="guidance scale on the input image: higher stays closer to it "
                                                        "(default: the model set's)")
    p.add_argument("--projection", choices=["learned", "reference"], help="latent projection onto the upscaler's "
                                                                          "input (default: the model set's)")
    p.add_argument("--tile", type=int, help="upscaler tile size in latent pixels (default: the set's, or chosen by --memory-budget)")
    p.add_argument("--halo", type=int, help="ACPT context halo in latent pixels")
    p.add_argument("--memory-budget", type=parse_bytes, help="working memory the whole run may use (SR and decode windows, the frame), e.g. 512MiB")
    p.add_argument("--time-budget", type=float, default=900.0, help="seconds; methods estimated to exceed it report a failure")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: float16 on CUDA; on a CPU with native bf16, bfloat16 for the full-resolution stages "
                        "and float32 for the edit; else float32")
    p.add_argument("--out", "-o", default="edited.png", help="output image file (default edited.png; the format "
                                                            "follows the extension)")
    p.add_argument("--report", help="write the JSON report (timings, memory, U-Net work, tiling) here")
    p.add_argument("--quiet", action="store_true", help="print nothing on success: no progress bars, no summary line "
                                                        "(errors and warnings still go to stderr)")
    p.set_defaults(func=cmd_edit)

    p = commands.add_parser("methods", help="list the methods")
    p.set_defaults(func=cmd_methods)

    from pipeline.bench.cli import register as register_bench

    register_bench(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
