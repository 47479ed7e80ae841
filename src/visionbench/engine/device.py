"""Where and how a run computes: the device, the seeds and thread count, the autocast dtype,
and whether torch.compile can run there."""

from __future__ import annotations

import functools
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
    else:  # the autotuner's fastest kernels; an earlier run's deterministic switch undone
        if device.type == "cuda":
            torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AVX512-BF16 or AMX); VISIONBENCH_CPU_BF16=0|1 overrides
    the check. Elsewhere oneDNN emulates them: measured 0.28 GFLOP/s against 117 in fp32 on an
    AVX2-only EPYC - autocast would be 400x slower."""
    forced = os.environ.get("VISIONBENCH_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_autocasts(device: torch.device) -> tuple[str, ...]:
    """The autocast dtypes `device` runs natively, the preferred first: bf16 and fp16 on CUDA
    GPUs from Ampere (compute capability 8.0) on; fp16 only before it (V100 7.0, T4 7.5), where
    bf16 is emulated; bf16 on CPUs with native bf16 (an airbench-shaped network trained 2.3x
    faster in bf16 + channels_last than in fp32 on such a 2-core EPYC); none elsewhere."""
    if device.type == "cuda":
        return ("bf16", "fp16") if torch.cuda.get_device_capability(device)[0] >= 8 else ("fp16",)
    return ("bf16",) if device.type == "cpu" and cpu_has_bf16() else ()


def resolve_amp(amp: bool | str, device: torch.device) -> bool | str:
    """train.amp as a new run records it: true becomes the device's preferred native autocast
    (or false), so that a resume, `eval`, `predict` and ensembles compute as training did,
    wherever they run and whatever VISIONBENCH_CPU_BF16 says then."""
    if amp is True:
        native = native_autocasts(device)
        return native[0] if native else False
    return amp


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for train.amp on `device` (None: fp32). A dtype the device does not
    run natively falls back to fp32, with a warning: emulated bf16 ran 400x slower than fp32 on
    an AVX2-only EPYC, so a run recorded under bf16 elsewhere is evaluated in fp32 here, its
    figures within rounding of the recorded ones (VISIONBENCH_CPU_BF16=1 emulates them)."""
    wanted = resolve_amp(amp, device)
    if not wanted:
        return None
    if wanted not in native_autocasts(device):
        warn_emulated(wanted, device)
        return None
    return AUTOCAST[wanted]


def grad_scaler(amp: bool | str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler where training autocasts to fp16 (its 5-bit exponent flushes small
    gradients to zero; bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type) if amp_dtype(amp, device) == torch.float16 else None


@functools.cache
def warn_emulated(wanted: str, device: torch.device) -> None:
    import warnings

    warnings.warn(
        f"train.amp={wanted} is set for this run but this {device.type} does not run {wanted} natively: "
        "computing in fp32 instead, so figures may differ from the run's in the last digits ("
        "VISIONBENCH_CPU_BF16=1 emulates bf16 on a CPU, slowly)",
        stacklevel=3,
    )


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
