"""Export a run's model to ONNX or TorchScript, checked against PyTorch on real test images.

The exported model takes float32 NCHW images with pixels in [0, 1] and includes the run's
normalisation, so a user feeds it decoded images as they are; the batch axis is dynamic.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import VisionbenchError
from ..runs.reopen import open_run

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}


class Normalized(nn.Module):
    """(x - mean) / std in front of the model, on [0, 1] pixels."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:
        raise VisionbenchError(
            "ONNX export needs onnx and onnxscript", fix="pip install 'visionbench[onnx]'"
        ) from None
    # the torch.export-based exporter (the default since torch 2.9); the batch axis stays symbolic
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,  # one self-contained file: these models are far below the 2 GB limit
        verbose=False,
    )


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    try:
        import onnxruntime as ort
    except ImportError:
        raise VisionbenchError(
            "the ONNX parity check needs onnxruntime", fix="pip install 'visionbench[onnx]'"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.14 but still the format asked for
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model, example).save(str(path))


def run_torchscript(path: Path, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def meta_path(path: Path) -> Path:
    """model.onnx -> model.onnx.json: each format keeps its own metadata and parity record."""
    return path.with_name(path.name + ".json")


def export_run(
    ref: str,
    fmt: str = "onnx",
    out: Path | None = None,
    runs_dir: str | Path | None = None,
    weights: str = "last",
    n: int = 64,
    tolerance: float = 1e-4,
) -> dict:
    """Write the model in `fmt`, then compare its logits with PyTorch's on up to `n` test images."""
    if fmt not in FORMATS:
        raise VisionbenchError(f"unknown format '{fmt}'", fix="use --format onnx or --format torchscript")
    loaded = open_run(
        ref, runs_dir, weights, device="cpu", done="exported"
    )  # exported for and checked on the CPU
    data = loaded.data
    model = Normalized(loaded.model.to(memory_format=torch.contiguous_format), data.mean, data.std).eval()
    test = data.dataset.splits["test"]
    n = min(n, len(test.labels))
    # the first n test images, as [0, 1] floats: real inputs, not random tensors
    x = torch.from_numpy(np.array(test.images[:n])).float() / 255  # a copy: the cache is read-only
    path = Path(out) if out else loaded.run.path / "export" / FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    example = x[: min(2, n)]  # any batch size > 1: a batch of 1 would be fixed as a constant
    (export_onnx if fmt == "onnx" else export_torchscript)(model, example, path)
    with torch.no_grad():
        expected = model(x).numpy()
    got = (run_onnx if fmt == "onnx" else run_torchscript)(path, x.numpy())
    diff = float(np.abs(got - expected).max())
    meta = {
        "run": loaded.run.id,
        "format": fmt,
        "path": str(path),
        "input": {"shape": ["batch", *test.images.shape[1:]], "dtype": "float32", "range": [0, 1]},
        "classes": data.dataset.classes,
        "parity": {"images": n, "max_abs_logit_diff": diff, "tolerance": tolerance},
        "torch": torch.__version__,
    }
    meta_path(path).write_text(json.dumps(meta, indent=1))
    if not diff <= tolerance:  # also catches NaN
        raise VisionbenchError(
            f"exported model differs from PyTorch: max abs logit difference {diff:.3g} > {tolerance:g}",
            where=str(path),
            fix="report it with the run's config; --tolerance raises the bar if the difference is expected",
        )
    return meta
