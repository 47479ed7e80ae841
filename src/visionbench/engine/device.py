"""Where and how a run computes: the device, the seeds and thread count, the autocast dtype."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..errors import VisionbenchError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VisionbenchError(
            f"device '{name}' asked for, but CUDA is not available", fix="use train.device=cpu (or auto)"
        )
    return torch.device(name)


def seed_everything(
    seed: int, device: torch.device, deterministic: bool = True, threads: int | None = None
) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    if deterministic and device.type == "cuda":
        # CPU kernels are already deterministic for a fixed thread count (the resume tests
        # check it bitwise), and this call costs 2.3 s of start-up there. warn_only: a few
        # CUDA kernels have no deterministic version.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AVX512-BF16 or AMX); VISIONBENCH_CPU_BF16=0|1 overrides
    the check. Elsewhere oneDNN emulates them: measured 0.28 GFLOP/s against 117 in fp32 on an
    AVX2-only EPYC - autocast would be 400x slower."""
    forced = os.environ.get("VISIONBENCH_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def amp_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """bf16 autocast when asked, on CUDA and on CPUs with native bf16 (an airbench-shaped
    network trained 2.3x faster in bf16 + channels_last than in fp32 on such a 2-core EPYC)."""
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
    return torch.bfloat16 if amp and native else None
