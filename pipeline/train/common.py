"""Shared training plumbing: device, seeding, time/step budgets, resumable checkpoints, progress bars,
and the one training loop every trainer runs."""
from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.bench.metrics import PSNR_CAP


def device() -> torch.device:
    """A GPU when present, else the CPU (2 threads: the machine is shared)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))


def to_tensor(images) -> torch.Tensor:
    """PIL images (same size) -> float tensor in [-1, 1], (B, 3, H, W)."""
    arr = np.stack([np.asarray(im.convert("RGB"), np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`pipeline.bench.metrics.psnr` per image for tensors in [-1, 1] (B, C, H, W), for training logs."""
    a = ((a.clamp(-1, 1) + 1) * 127.5).round()
    b = ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(255.0 ** 2 / mse)).clamp_max(PSNR_CAP)


@dataclass
class Budget:
    """Stop at `steps` or after `minutes` of wall clock, whichever comes first; `progress` drives the LR."""

    steps: int
    minutes: float | None = None
    start: float = field(default_factory=time.time)
    elapsed_before: float = 0.0

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start

    def progress(self, step: int) -> float:
        p = step / max(1, self.steps)
        if self.minutes:
            p = max(p, self.elapsed() / (60 * self.minutes))
        return min(1.0, p)

    def done(self, step: int) -> bool:
        return self.progress(step) >= 1.0


def cosine_lr(base: float, progress: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    if progress < warmup:
        return base * (0.1 + 0.9 * progress / warmup)
    p = (progress - warmup) / (1 - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


class Checkpoint:
    """`runs/<name>/ckpt.pt`: model(s), optimiser, step, elapsed seconds; written atomically."""

    def __init__(self, run_dir: str | Path, name: str):
        self.path = Path(run_dir) / name / "ckpt.pt"

    def save(self, step: int, elapsed: float, **state) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"step": step, "elapsed": elapsed,
                    **{k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in state.items()}}, tmp)
        os.replace(tmp, self.path)

    def load(self, **state) -> tuple[int, float]:
        """Restore into the given objects; returns (step, elapsed seconds), (0, 0) if no checkpoint."""
        if not self.path.is_file():
            return 0, 0.0
        ckpt = torch.load(self.path, map_location="cpu", weights_only=False)
        for k, v in state.items():
            if k in ckpt:
                v.load_state_dict(ckpt[k])
        return ckpt["step"], ckpt["elapsed"]

    def extra(self, key: str):
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False).get(key)


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=5.0,
                disable=os.environ.get("TRAIN_QUIET") == "1")


Postfix = dict[str, tuple[torch.Tensor | float, str]]  # progress-bar name -> (value, format spec)


def train_loop(desc: str, *, opt: torch.optim.Optimizer, budget: Budget, step: int, args: argparse.Namespace,
               ckpt: Checkpoint, state: dict, batch_loss: Callable[[], tuple[torch.Tensor, Postfix]],
               clip: Sequence[torch.Tensor] | None = None, on_step: Callable[[int], None] | None = None,
               warmup: float = 0.03) -> int:
    """The optimisation loop of every trainer, so that LR schedule, clipping, progress and checkpoints
    cannot drift apart between them: until `budget` is spent, set the cosine LR from `args.lr`, take
    one step on `batch_loss()` (clipping `clip` to norm 1), show its postfix every 20 steps, run
    `on_step(step)` (EMA, validation) and save `state` to `ckpt` every `args.checkpoint_every` steps
    and at the end. Returns the final step."""
    bar = progress_bar(args.steps, step, desc)
    while not budget.done(step):
        lr = cosine_lr(args.lr, budget.progress(step), warmup=warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, postfix = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(clip, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix({k: f"{float(v):{spec}}" for k, (v, spec) in postfix.items()})
        if on_step is not None:
            on_step(step)
        if step % args.checkpoint_every == 0:
            ckpt.save(step, budget.elapsed(), **state)
    bar.close()
    ckpt.save(step, budget.elapsed(), **state)
    return step


class EMA:
    """Exponential moving average of parameters with the usual warm-up `min(decay, (1+n)/(10+n))`."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.995):
        self.decay = decay
        self.n = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"n": self.n, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.n, self.shadow = state["n"], state["shadow"]

    def copy_to(self, module: torch.nn.Module) -> None:
        module.load_state_dict(self.shadow)
