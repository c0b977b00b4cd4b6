"""The edit report and the meters behind it: stage timers, peak memory, U-Net evaluations and FLOPs.

Peak memory on CPU is the process's resident-set high-water mark (Linux `VmHWM`), reset at the
start of every run through `/proc/self/clear_refs`, so it covers this run only (model weights
already resident are included). On CUDA (where the models run on it) it is `torch.cuda.max_memory_allocated`. U-Net
evaluations count one per sample in a batch (a CFG step at batch 3 is 3 evaluations); FLOPs are
counted with `torch.utils.flop_counter` once per input shape and multiplied.
"""
from __future__ import annotations

import json
import resource
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


_cpu_sdpa_flop._get_raw = True
# torch's counter has no formula for the CPU attention kernel, so attention would count as 0 FLOPs on a CPU
FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _on_cuda(device: torch.device | str | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def reset_peak_memory(device: torch.device | str | None = None) -> str:
    """Start a new peak-memory window for where the models run; returns how peak memory is measured."""
    if _on_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)
        return "torch.cuda.max_memory_allocated"
    try:
        _CLEAR_REFS.write_text("5")
        return "process peak RSS (VmHWM, reset per run)"
    except OSError:
        return "process peak RSS since start (ru_maxrss; could not reset)"


def _status_bytes(field: str) -> int | None:
    """A `/proc/self/status` memory field (`VmHWM`, `VmRSS`) in bytes; None where there is no procfs."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    if _on_cuda(device):
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_memory_bytes(device: torch.device | str | None = None) -> int:
    """What is resident now: allocated CUDA memory, or the process RSS."""
    if _on_cuda(device):
        return int(torch.cuda.memory_allocated(device))
    return _status_bytes("VmRSS") or 0


@dataclass
class EditReport:
    """Everything needed to judge and to reproduce one edit."""

    method: str
    model_set: str
    model_set_trained: bool
    instruction: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    edit_size: tuple[int, int] | None
    seed: int
    steps: int
    text_guidance: float
    image_guidance: float
    scheduler: str
    device: str = "cpu"
    dtype: str = "float32"                 # the edit stage's
    upscale_dtype: str = "float32"         # projector, SR U-Net and decoder
    projection: str | None = None
    tiling: dict[str, Any] | None = None
    region: dict[str, Any] | None = None   # mobilepicasso: share of the frame per origin, tiles run/skipped
    note: str | None = None                # e.g. why the source came back unchanged
    reused_stages: list[str] = field(default_factory=list)  # stages taken from a shared memo (not timed here)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    peak_memory_bytes: int = 0
    working_memory_bytes: int = 0          # the peak above what was resident when the run started (weights, runtime)
    peak_memory_measure: str = ""
    memory_plan: dict[str, Any] | None = None  # windows and batches chosen under --memory-budget
    unet_evaluations: dict[str, int] = field(default_factory=dict)
    unet_flops: dict[str, float] = field(default_factory=dict)
    failed: bool = False
    failure_reason: str | None = None

    @property
    def total_unet_evaluations(self) -> int:
        return sum(self.unet_evaluations.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_unet_evaluations"] = self.total_unet_evaluations
        d["total_unet_flops"] = sum(self.unet_flops.values())
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class RunMeter:
    """Collects stage times, U-Net evaluations/FLOPs and the peak memory of one run."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.stage_seconds: dict[str, float] = {}
        self.evaluations: Counter[str] = Counter()
        self.flops: Counter[str] = Counter()
        self._flops_per_sample: dict[tuple, float] = {}
        self.memory_measure = reset_peak_memory(device)
        self.resident_bytes = current_memory_bytes(device)
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if _on_cuda(self.device):
                torch.cuda.synchronize(self.device)  # CUDA runs asynchronously: time the work, not the launch
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - t0

    @contextmanager
    def watch(self, module: torch.nn.Module, name: str):
        """Count evaluations and FLOPs of `module` under the label `name` while the block runs."""
        pending: list[tuple[tuple, FlopCounterMode, int]] = []

        def before(_m, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            batch = sample.shape[0]
            self.evaluations[name] += batch
            key = (name, tuple(sample.shape[1:]))
            if key in self._flops_per_sample:
                self.flops[name] += self._flops_per_sample[key] * batch
            else:
                counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
                counter.__enter__()
                pending.append((key, counter, batch))

        def after(_m, _args, _out):
            if pending:
                key, counter, batch = pending.pop()
                counter.__exit__(None, None, None)
                per_sample = counter.get_total_flops() / batch
                self._flops_per_sample[key] = per_sample
                self.flops[name] += per_sample * batch

        handles = [module.register_forward_pre_hook(before, with_kwargs=True), module.register_forward_hook(after)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for _key, counter, _batch in pending:  # a forward that raised
                counter.__exit__(None, None, None)

    def fill(self, report: EditReport) -> EditReport:
        report.stage_seconds = {k: round(v, 4) for k, v in self.stage_seconds.items()}
        report.total_seconds = round(time.perf_counter() - self._start, 4)
        report.peak_memory_bytes = peak_memory_bytes(self.device)
        report.working_memory_bytes = max(report.peak_memory_bytes - self.resident_bytes, 0)
        report.peak_memory_measure = self.memory_measure
        report.unet_evaluations = dict(self.evaluations)
        report.unet_flops = {k: float(v) for k, v in self.flops.items()}
        return report
