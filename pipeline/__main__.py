"""`python -m pipeline`: edit an image, list the methods, run the benchmark."""
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


def cmd_edit(args: argparse.Namespace) -> int:
    from pipeline import InputError, ModelSetUnavailable, edit

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


def main(argv: list[str] | None = None) -> int:
    from pipeline.inputs import parse_bytes
    from pipeline.methods import METHODS

    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("edit", help="edit one image")
    p.add_argument("image")
    p.add_argument("--instruction", "-i", required=True)
    p.add_argument("--method", default="mobilepicasso", choices=list(METHODS))
    p.add_argument("--size", default="4k", help="4k | 2k | 1k | long side (e.g. 2048) | WxH (exact)")
    p.add_argument("--models", default="mini", help="mini | sd15 | sd15-arch | path to a model-set folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--text-guidance", type=float)
    p.add_argument("--image-guidance", type=float)
    p.add_argument("--projection", choices=["learned", "reference"], help="default: the model set's")
    p.add_argument("--tile", type=int, help="upscaler tile size in latent pixels (default: the set's, or chosen by --memory-budget)")
    p.add_argument("--halo", type=int, help="ACPT context halo in latent pixels")
    p.add_argument("--memory-budget", type=parse_bytes, help="choose the largest-payoff tile that fits, e.g. 512MiB")
    p.add_argument("--time-budget", type=float, default=900.0, help="seconds; methods estimated to exceed it report a failure")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: float16 on CUDA, bfloat16 on a CPU with native bf16, else float32")
    p.add_argument("--out", "-o", default="edited.png")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_edit)

    p = commands.add_parser("methods", help="list the methods")
    p.set_defaults(func=cmd_methods)

    from pipeline.bench.cli import register as register_bench

    register_bench(commands)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
