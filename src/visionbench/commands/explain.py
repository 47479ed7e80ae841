"""Why a run's model decided what it did: gradient saliency, SmoothGrad, Integrated Gradients
and Grad-CAM (captum) for chosen or worst-classified test images, drawn as one PNG grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..analysis.plots import plot_attributions
from ..engine.loop import predict
from ..errors import VisionbenchError, unknown_name
from ..runs.reopen import LoadedRun, open_run

METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam")


def require_captum():
    try:
        import captum.attr
    except ImportError:
        raise VisionbenchError(
            "explain needs captum, which is not installed", fix="pip install 'visionbench[explain]'"
        ) from None
    return captum.attr


def conv_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def pick_layer(model: nn.Module, name: str | None, x: torch.Tensor | None = None) -> tuple[str, nn.Module]:
    """The named layer, or by default the last Conv2d in registration order (Grad-CAM's usual
    choice: the deepest feature map that still has a spatial layout). With a sample batch `x`,
    a named layer whose output is no spatial map (a block ending in flatten or linear, or an
    activation shared with the classifier) is refused like an unknown one."""
    modules = dict(model.named_modules())
    convs = conv_layers(model)
    if name is None:
        if not convs:
            raise VisionbenchError("Grad-CAM needs a conv layer and this model has none", fix="use --layer")
        name = convs[-1]
    if name not in modules or name == "":
        raise unknown_name("layer", name, convs)
    if x is not None and name not in (maps := spatial_layers(model, [*convs, name], x)):
        raise VisionbenchError(
            f"layer '{name}' gives no spatial map (Grad-CAM needs an N x C x H x W output at every call)",
            fix=f"choose one of: {', '.join(n for n in convs if n in maps)}",
        )
    return name, modules[name]


def spatial_layers(model: nn.Module, names: list[str], x: torch.Tensor) -> set[str]:
    """Of `names`, the layers every output of which is a 4-D map in one eval forward of `x`."""
    modules = dict(model.named_modules())
    dims: dict[str, set] = {n: set() for n in names}

    def hook(name):
        return lambda _, __, out: dims[name].add(out.ndim if isinstance(out, torch.Tensor) else None)

    handles = [modules[n].register_forward_hook(hook(n)) for n in dict.fromkeys(names)]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return {n for n, d in dims.items() if d == {4}}


def attributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: nn.Module) -> dict:
    """Per method, one (N, H, W) map of absolute importance per pixel (channels summed)."""
    attr = require_captum()
    model.eval()
    x = x.detach().contiguous().requires_grad_()  # captum warns when it has to set this itself
    # SmoothGrad's noise: 15% of the input range, the paper's recommended 10-20% (Smilkov 2017)
    noise = 0.15 * (x.max() - x.min()).item()
    maps = {
        "saliency": attr.Saliency(model).attribute(x, target=target, abs=True),
        "smoothgrad": attr.NoiseTunnel(attr.Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=16, stdevs=noise, target=target, abs=True
        ),
        # baseline 0 after normalisation: the dataset's mean colour, a neutral image
        "integrated_gradients": attr.IntegratedGradients(model)
        .attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=32)
        .abs(),
        "gradcam": attr.LayerAttribution.interpolate(
            attr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True),
            tuple(x.shape[-2:]),
            "bilinear",
        ),
    }
    return {k: v.detach().sum(1).cpu().numpy() for k, v in maps.items()}


def worst_indices(logits: torch.Tensor, targets: torch.Tensor, count: int) -> list[int]:
    """Test images with the highest loss: the most confident mistakes first."""
    losses = F.cross_entropy(logits, targets, reduction="none")
    return losses.argsort(descending=True)[:count].tolist()


def index_list(indices) -> list[int] | None:
    """`indices` as a list of ints: one int is a list of one; anything else is an error."""
    if indices is None:
        return None
    many = indices if isinstance(indices, (list, tuple, range, np.ndarray)) else [indices]
    bad = [i for i in many if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
    if bad:
        raise VisionbenchError(
            f"test indices are whole numbers, not {bad[0]!r}",
            fix="give one index or a list of them, e.g. indices=[3, 17]",
        )
    return [int(i) for i in many]


def explain_run(
    ref: str,
    runs_dir: str | Path | None = None,
    indices: list[int] | None = None,
    count: int = 8,
    layer: str | None = None,
    target: str = "pred",
    weights: str = "last",
    device: str = "auto",
) -> dict:
    """Attribution maps for `indices` of the test split (default: the `count` worst-classified),
    saved under the run's explain/ folder as a PNG grid and a JSON index."""
    require_captum()
    indices = index_list(indices)
    if target not in ("pred", "true"):
        raise VisionbenchError(f"unknown target '{target}'", fix="use --target pred or --target true")
    loaded = open_run(ref, runs_dir, weights, device, done="explained")
    if loaded.cfg.data.task == "multilabel":
        raise VisionbenchError(
            "explain maps one class per image (the predicted or the true one); this run is multi-label",
            where=str(loaded.run.path),
            fix="explain a single-label run; per-label maps for multi-label runs are not made yet",
        )
    test = loaded.data.dataset.splits["test"]
    layer_name, layer_module = pick_layer(loaded.model, layer, batch_of(loaded, [0]) if layer else None)
    logits, targets = predict(loaded.model, loaded.data.test)
    if indices:
        bad = [i for i in indices if not 0 <= i < len(test.labels)]
        if bad:
            raise VisionbenchError(
                f"test index {bad[0]} out of range", fix=f"use 0 to {len(test.labels) - 1}"
            )
    else:
        indices = worst_indices(logits, targets, count)
    x = batch_of(loaded, indices)
    probs = logits[indices].softmax(1)
    preds = probs.argmax(1)
    wanted = preds if target == "pred" else targets[indices]
    maps = attributions(loaded.model, x, wanted.to(x.device), layer_module)
    classes = loaded.data.dataset.classes
    rows = [
        {
            "index": i,
            "true": classes[int(targets[i])],
            "pred": classes[int(p)],
            "confidence": float(probs[k, p]),
            "explained": classes[int(wanted[k])],
        }
        for k, (i, p) in enumerate(zip(indices, preds))
    ]
    folder = loaded.run.path / "explain"
    folder.mkdir(exist_ok=True)
    png = folder / "explain.png"
    plot_attributions(
        np.asarray(test.images[indices]), maps, rows, png, title=f"{loaded.run.id}: {layer_name}"
    )
    result = {"run": loaded.run.id, "layer": layer_name, "target": target, "png": str(png), "images": rows}
    loaded.run.write_json("explain/explain.json", result)
    return result


def batch_of(loaded: LoadedRun, indices: list[int]) -> torch.Tensor:
    """Test images `indices`, normalised exactly as the run's evaluation saw them."""
    loader = loaded.data.loader("test", np.asarray(indices))
    return torch.cat([x for x, _ in loader.epoch(0)])
