"""`python -m pipeline.train {all,photos,autoencoder,detector,edit,projector,upscaler,edit_region,look,evaluate} --out pipeline/models/mini`.

Each part reads the components it depends on from `--out` (the set folder) and writes its own
weights there; checkpoints go to `--run-dir` (resume with `--resume`).

`all` first fetches the photo pool (`photos`: PhotoEdit triples are mixed into the editor's,
the edit-region model's and the autoencoder's batches when the pool is there), then trains the autoencoder, which everything else reads, and then two independent chains at
once, each a sequence of child processes with half the CPU threads: the edit chain (detector,
then the plain edit base, then its filtered + hallucination-aware fine-tune, then the edit-region
and look models, which read the editor's final text encoder) and the upscaling
chain (projector, then SR U-Net). Each child's output goes to `<run-dir>/<step>.log`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULTS = {  # steps, batch size, lr, minutes (wall-clock cap on this 2-core CPU)
    "autoencoder": (2500, 12, 6e-4, 13.0),
    "detector": (600, 16, 2e-3, 4.0),
    "edit": (6000, 64, 8e-4, 85.0),
    "projector": (5000, 8, 1e-3, 50.0),
    "upscaler": (4000, 8, 1e-3, 28.0),
    "edit_region": (3000, 24, 2e-3, 40.0),
    "look": (3000, 64, 2e-3, 10.0),
    "photos": (0, 0, 0.0, 0.0),
}
PARTS = ("photos", "autoencoder", "detector", "edit", "projector", "upscaler", "edit_region", "look")
# after the autoencoder; the edit chain is the shipped recipe: a plain base, then the filtered +
# hallucination-aware fine-tune (the detector scores the training pool the base builds)
CHAINS = (("detector", "edit-base", "edit-full", "edit_region", "look"), ("projector", "upscaler"))
FULL_SHARE = 6  # the edit fine-tune gets 1/6 of the edit steps and minutes


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
    p.add_argument("--ae-photo-share", type=float, default=0.5,
                   help="(autoencoder) share of each batch that is photo windows (when the pool is there)")
    p.add_argument("--variant", default="full", choices=("plain", "filtered", "full"),
                   help="(edit) plain | filtered (drop top share by artifact ratio) | full (+ hallucination-aware loss)")
    p.add_argument("--init-from", default=None, help="(edit) start from this checkpoint (ablation branches)")
    p.add_argument("--only", default=None, choices=("refiner", "colour"),
                   help="(edit_region) train only the border refiner or the colour-map heads, on the weights in "
                        "--init-from (default --out)")
    p.add_argument("--refine-steps", type=int, default=None,
                   help="(edit_region) steps of the border refiner (default 1500, at most --steps)")
    p.add_argument("--freeze-text-encoder", action="store_true",
                   help="(edit) train the U-Net only (the edit-region model reads the text encoder: it stays valid)")
    p.add_argument("--no-save", action="store_true", help="(edit) keep the result in the checkpoint only (ablation branches)")
    p.add_argument("--filter-share", type=float, default=0.15)
    p.add_argument("--hallucination-weight", type=float, default=0.5, help="lambda of the hallucination-aware loss")
    p.add_argument("--pixel-loss", type=float, default=1.0,
                   help="(projector, upscaler) weight of an L1 loss on decoded pixels, added to the latent loss")
    p.add_argument("--latent-loss", type=float, default=0.1,
                   help="(projector) weight of the latent regression onto encode(resize(decode(z)))")
    p.add_argument("--pool", type=int, default=20000,
                   help="(edit, edit_region) SynthEdit training triples; (look) thumbnails, half of them photos")
    p.add_argument("--photos", type=int, default=None,
                   help="(edit, edit_region) PhotoEdit triples from the train photos mixed in (default 30%% of --pool; "
                        "0: none; none without a pool)")
    p.add_argument("--e2e-methods", default=None,
                   help="(evaluate) comma list of methods to re-run end to end; the others keep their last rows")
    p.add_argument("--local-methods", default=None,
                   help="(evaluate local) comma list of rows to re-run (methods or ablation rows) on every example; "
                        "the others keep their last rows")
    p.add_argument("--eval-n", type=int, default=None,
                   help="(evaluate) test examples per table (default: 400 edit and ablation, 40 sweep, 8 upscaler)")
    p.add_argument("--tables", default=None,
                   help="(evaluate) comma list of sweep,edit,ablation,sr,e2e,region,tune-local,local,examples,photos,photo-oracle,photo-sheet "
                        "(default: all but tune-local, examples and the photo tables)")
    p.add_argument("--long-side", type=int, default=None, help="(evaluate local, photos) output long side, default 1024 (photos: 3840)")
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


def step_argv(step: str, argv: list[str], args: argparse.Namespace) -> list[str]:
    """The command line of one step of `all`: the user's options, then the step's own (last wins)."""
    rest = list(argv)
    rest.remove("all")
    if step == "edit-base":
        return ["edit", *rest, "--variant", "plain"]
    if step == "edit-full":
        steps = max(2, (args.steps or DEFAULTS["edit"][0]) // FULL_SHARE)
        minutes = 0 if args.minutes == 0 else (args.minutes or DEFAULTS["edit"][3]) / FULL_SHARE
        return ["edit", *rest, "--variant", "full", "--init-from", str(Path(args.run_dir) / "edit" / "ckpt.pt"),
                "--steps", str(steps), "--minutes", str(minutes)]
    return [step, *rest]


def run_chain(chain: tuple[str, ...], argv: list[str], args: argparse.Namespace, threads: int) -> dict[str, float]:
    """Run the steps of one chain one after another, each as a child process; stop at a failure."""
    env = {**os.environ, "TRAIN_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    times = {}
    for step in chain:
        log = Path(args.run_dir) / f"{step}.log"
        print(f"[train] {step}: started (log: {log})", flush=True)
        t0 = time.time()
        with log.open("w") as f:
            code = subprocess.run([sys.executable, "-m", "pipeline.train", *step_argv(step, argv, args)],
                                  stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            raise RuntimeError(f"{step} failed (exit {code}): see {log}")
        times[step] = time.time() - t0
        print(f"[train] {step}: done in {times[step] / 60:.1f} min", flush=True)
    return times


def train_all(argv: list[str], args: argparse.Namespace) -> dict[str, float]:
    t0 = time.time()
    times = {"photos": run_part("photos", args)}
    times["autoencoder"] = run_part("autoencoder", args)
    print(f"[train] autoencoder: done in {times['autoencoder'] / 60:.1f} min", flush=True)
    threads = int(os.environ.get("TRAIN_THREADS") or max(1, (os.cpu_count() or 2) // len(CHAINS)))
    with ThreadPoolExecutor(len(CHAINS)) as pool:
        futures = [pool.submit(run_chain, chain, argv, args, threads) for chain in CHAINS]
        errors = [f.exception() for f in futures]
    if any(errors):
        raise SystemExit("; ".join(str(e) for e in errors if e))
    for f in futures:
        times.update(f.result())
    times["all"] = time.time() - t0
    return times


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    if args.part == "evaluate":
        from pipeline.train import evaluate

        evaluate.run(args)
        return
    if args.part == "all":
        times = train_all(argv, args)
    else:
        times = {args.part: run_part(args.part, args)}
    for part, seconds in times.items():
        print(f"[train] {part}: {seconds / 60:.1f} min", flush=True)
    log = Path(args.run_dir) / "times.json"
    old = json.loads(log.read_text()) if log.is_file() else {}
    tmp = log.with_suffix(f".{os.getpid()}.tmp")  # the two chains of `all` write it too: never half a file
    tmp.write_text(json.dumps({**old, **times}, indent=2))
    os.replace(tmp, log)


if __name__ == "__main__":
    main()
