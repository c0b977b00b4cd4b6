"""`python -m pipeline.train {all,autoencoder,detector,edit,projector,upscaler,evaluate} --out pipeline/models/mini`.

Each part reads the components it depends on from `--out` (the set folder) and writes its own
weights there; checkpoints go to `--run-dir` (resume with `--resume`).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULTS = {  # steps, batch size, lr, minutes (wall-clock cap on this 2-core CPU)
    "autoencoder": (2500, 12, 6e-4, 13.0),
    "detector": (600, 16, 2e-3, 4.0),
    "edit": (6000, 64, 8e-4, 85.0),
    "projector": (5000, 8, 1e-3, 50.0),
    "upscaler": (4000, 8, 1e-3, 28.0),
}
PARTS = ("autoencoder", "detector", "edit", "projector", "upscaler")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__)
    p.add_argument("part", choices=(*PARTS, "all", "evaluate"))
    p.add_argument("--out", default="pipeline/models/mini", help="model set folder to write weights into")
    p.add_argument("--models", default=None, help="(evaluate) the set to evaluate; default --out")
    p.add_argument("--results", default="results/mini", help="(evaluate) folder for CSVs")
    p.add_argument("--run-dir", default="runs/train", help="checkpoints and logs")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap per part (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--decoder-only", action="store_true",
                   help="(autoencoder) fine-tune the decoder with the encoder frozen (latent space kept)")
    p.add_argument("--variant", default="full", choices=("plain", "filtered", "full"),
                   help="(edit) plain | filtered (drop top share by artifact ratio) | full (+ hallucination-aware loss)")
    p.add_argument("--init-from", default=None, help="(edit) start from this checkpoint (ablation branches)")
    p.add_argument("--no-save", action="store_true", help="(edit) keep the result in the checkpoint only (ablation branches)")
    p.add_argument("--filter-share", type=float, default=0.15)
    p.add_argument("--hallucination-weight", type=float, default=0.5, help="lambda of the hallucination-aware loss")
    p.add_argument("--pixel-loss", type=float, default=1.0,
                   help="(projector, upscaler) weight of an L1 loss on decoded pixels, added to the latent loss")
    p.add_argument("--latent-loss", type=float, default=0.1,
                   help="(projector) weight of the latent regression onto encode(resize(decode(z)))")
    p.add_argument("--pool", type=int, default=20000, help="(edit) training triples pre-encoded")
    p.add_argument("--eval-n", type=int, default=None, help="(evaluate) test examples per table")
    p.add_argument("--tables", default=None, help="(evaluate) comma list of sweep,edit,ablation,sr,e2e (default all)")
    p.add_argument("--apply-sweep", action="store_true", help="(evaluate) write the best sweep setting into model_set.json")
    p.add_argument("--quick", action="store_true", help="(evaluate) small sizes only (CI)")
    return p


def part_args(args: argparse.Namespace, part: str) -> argparse.Namespace:
    steps, batch, lr, minutes = DEFAULTS[part]
    a = argparse.Namespace(**vars(args))
    a.steps = args.steps or steps
    a.batch_size = args.batch_size or batch
    a.lr = args.lr or lr
    a.minutes = (None if args.minutes == 0 else args.minutes) if args.minutes is not None else minutes
    return a


def run_part(part: str, args: argparse.Namespace) -> float:
    import importlib

    t0 = time.time()
    module = importlib.import_module(f"pipeline.train.{part}")
    module.train(part_args(args, part))
    return time.time() - t0


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    if args.part == "evaluate":
        from pipeline.train import evaluate

        evaluate.run(args)
        return
    times = {}
    if args.part == "all":
        for part in PARTS:
            if part == "edit":  # the shipped recipe: a plain base, then the full (filtered + HAL) fine-tune
                times["edit-base"] = run_part("edit", argparse.Namespace(**{**vars(args), "variant": "plain"}))
                base = str(Path(args.run_dir) / "edit" / "ckpt.pt")
                steps = max(2, (args.steps or DEFAULTS["edit"][0]) // 6)
                minutes = None if args.minutes == 0 else (args.minutes or DEFAULTS["edit"][3]) / 6
                times["edit-full"] = run_part("edit", argparse.Namespace(**{
                    **vars(args), "variant": "full", "init_from": base, "steps": steps,
                    "minutes": 0 if minutes is None else minutes}))
            else:
                times[part] = run_part(part, args)
            print(f"[train] {part}: done", flush=True)
    else:
        times[args.part] = run_part(args.part, args)
    for part, seconds in times.items():
        print(f"[train] {part}: {seconds / 60:.1f} min", flush=True)
    log = Path(args.run_dir) / "times.json"
    old = json.loads(log.read_text()) if log.is_file() else {}
    log.write_text(json.dumps({**old, **times}, indent=2))


if __name__ == "__main__":
    main()
