"""Where and how a run computes: the device, the seeds and thread count, the autocast dtype,
and whether torch.compile can run there."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sys

import numpy as np
import torch

from ..data.decode import usable_cpus
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
    torch.set_num_threads(threads or usable_cpus())
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


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor would call on the CPU ($CXX, else g++; clang++ on macOS), if
    it is on the PATH: the same search as torch._inductor's cpp_builder, without its import."""
    name = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    return shutil.which(name)


def require_compile(device: torch.device) -> None:
    """train.compile's needs on `device`, checked before a run's folder is made: otherwise the
    first training step fails deep inside Inductor, with a traceback of its own."""
    import torch._dynamo  # what torch.compile imports anyway (~1.5 s)

    fix = "or set train.compile=false (the default)"
    if not torch._dynamo.is_dynamo_supported():
        raise VisionbenchError(
            f"torch.compile does not support Python {sys.version_info.major}.{sys.version_info.minor} "
            f"with torch {torch.__version__}",
            fix=f"use a Python version this torch supports, {fix}",
        )
    if device.type == "cpu" and cxx_compiler() is None:
        name = os.environ.get("CXX") or "g++"
        raise VisionbenchError(
            f"train.compile on the CPU needs a C++ compiler, and '{name}' is not on the PATH",
            fix=f"install one (e.g. apt-get install g++) or point $CXX at one, {fix}",
        )
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise VisionbenchError(
            "train.compile on CUDA needs Triton, which is not installed",
            fix=f"pip install triton (the version your torch was built with), {fix}",
        )
