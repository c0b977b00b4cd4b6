"""Which device and dtype a pipeline may run on here, checked at run time.

fp16 is for CUDA; bf16 on a CPU only where the CPU computes it natively (AVX512-BF16 or AMX):
elsewhere PyTorch emulates it and it is slower than fp32.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from pipeline.inputs import InputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(cpuinfo.read_text().split())
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | str | None:
    """'bf16' / 'bfloat16' / torch.bfloat16 -> torch.bfloat16; 'auto' and None pass through."""
    if name is None or isinstance(name, torch.dtype) or name == "auto":
        return name
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose from auto, float32, bfloat16, float16")
    return DTYPES[name]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """The fast dtype of `device`: fp16 on CUDA, bf16 on a CPU with native bf16, else fp32."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def check_device_dtype(device: torch.device, dtype: torch.dtype) -> None:
    """Raise `InputError` (one sentence) for a device that is absent or a dtype it cannot run well."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was asked for but no CUDA device is available here; use --device cpu")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"unsupported dtype {dtype}; use float32, bfloat16 or float16")
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError("float16 needs a CUDA device; on the CPU use float32 or bfloat16")
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bf16():
        raise InputError("this CPU has no native bfloat16 (AVX512-BF16 or AMX), where bf16 is slower than "
                         "float32; use float32")
