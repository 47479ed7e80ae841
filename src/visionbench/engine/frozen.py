"""Where a stage's frozen layers end: the module whose input they compute (the cut), the rest of
the network after it as a chain of the model's own modules, and why a model does not split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .freeze import held_batchnorms

# random in training, by class: torch's dropouts, torchvision's StochasticDepth, timm's DropPath
RANDOM_CLASSES = ("StochasticDepth", "DropPath", "DropBlock2d")


def is_random(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ in RANDOM_CLASSES


def drop_rate(m: nn.Module) -> float:
    """The probability a dropout-like module drops (p, or timm's drop_prob)."""
    return float(getattr(m, "p", None) or getattr(m, "drop_prob", None) or 0.0)


class Rest(nn.Module):
    """The model's modules after the cut, applied in the model's order, with a flatten before a
    linear layer where the forward of torchvision's and timm's classifiers has one."""

    def __init__(self, steps: list[tuple[str, nn.Module]]):
        super().__init__()
        self.names = [name for name, _ in steps]
        self.steps = nn.ModuleList(m for _, m in steps)  # the model's own: training them trains it

    def owns(self, name: str) -> bool:
        """Whether the parameter or module `name` (the model's name for it) is in the rest."""
        return any(name == n or name.startswith(n + ".") for n in self.names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            first = next((m for m in step.modules() if not any(m.children())), step)
            if x.ndim > 2 and isinstance(first, nn.Linear):
                x = x.flatten(1)
            x = step(x)
        return x


@dataclass
class Split:
    cut: str  # the module whose input the frozen layers compute
    module: nn.Module
    rest: Rest


def split_model(model: nn.Module, frozen: set[str]) -> Split | str:
    """The model split where the `frozen` parameters end, or why it cannot be. The cut is the
    outermost module around the first trainable parameter whose parameters all train, moved
    back to the first dropout before it among its siblings (random in training, it must run
    in the rest: VGG's classifier holds two, one before a frozen linear layer); the rest is
    the cut, its later siblings, its parent's later siblings, and so up."""
    params = [n for n, _ in model.named_parameters()]
    first = next((n for n in params if n not in frozen), None)
    if first is None:
        return "it freezes every layer"
    path = first.split(".")[:-1]
    if not path:
        return f"its first trained parameter, {first}, belongs to no layer"
    while len(path) > 1 and frozen.isdisjoint(n for n in params if n.startswith(".".join(path[:-1]) + ".")):
        path = path[:-1]
    siblings = lambda depth: list(model.get_submodule(".".join(path[:depth])).named_children())
    names = [n for n, _ in siblings(len(path) - 1)]
    i = names.index(path[-1])
    parent = model.get_submodule(".".join(path[:-1]))
    if parent is model or isinstance(parent, nn.Sequential):  # a chain: the dropouts before go too
        random = [
            k
            for k in range(i)
            if is_random(getattr(parent, names[k])) and drop_rate(getattr(parent, names[k]))
        ]
        path[-1] = names[random[0] if random else i]
    steps = []
    for depth in range(len(path), 0, -1):
        prefix = ".".join(path[: depth - 1])
        level = siblings(depth - 1)
        start = [n for n, _ in level].index(path[depth - 1])
        start += depth < len(path)  # the cut itself; above it, what comes after its ancestor
        steps += [(f"{prefix}.{n}" if prefix else n, m) for n, m in level[start:]]
    rest, cut = Rest(steps), ".".join(path)
    trained_before = [n for n in params if n not in frozen and not rest.owns(n)]
    if trained_before:
        return f"{trained_before[0]} trains but comes before {cut}"
    return Split(cut, model.get_submodule(cut), rest)


class _Captured(Exception):
    """Stops a forward once the cut's input is known: the layers after it need not run."""


def capture(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input `model` hands `module` when it runs on `x` (the frozen layers' output)."""
    seen = []

    def hook(_, args):
        seen.append(args[0])
        raise _Captured

    handle = module.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not seen or not isinstance(seen[0], torch.Tensor):
        raise ValueError("the forward never hands it one tensor")
    return seen[0]


def random_frozen(model: nn.Module, split: Split, frozen: set[str], bn_eval: bool) -> str | None:
    """Why the frozen layers would compute differently from step to step, or None: a dropout in
    them, a BatchNorm using batch statistics (a dropout inside a forward, as timm's drop_rate,
    is for `mismatch` to find)."""
    held = held_batchnorms(model, frozen) if bn_eval else []
    for name, m in model.named_modules():
        if not name or split.rest.owns(name):
            continue
        if is_random(m) and drop_rate(m) > 0:
            return f"{name} ({type(m).__name__}, p={drop_rate(m):g}) is random in training and frozen"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in held:
            return f"{name} normalises with batch statistics in training (finetune.bn_eval=false)"
    return None


@torch.no_grad()
def mismatch(model: nn.Module, split: Split, x: torch.Tensor, frozen: set[str], bn_eval: bool) -> str | None:
    """Why the rest, on what the frozen layers computed in eval mode, would not compute what the
    whole model computes on `x` - in eval mode and in training mode, dropout drawing the same
    numbers - or None. The model's buffers, mode and random state are left as they were."""
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            model.eval()
            features = capture(model, split.module, x)
            for training in (False, True):
                model.train(training)
                for m in held_batchnorms(model, frozen) if training and bn_eval else []:
                    m.eval()
                torch.manual_seed(0)
                want = model(x).float()
                torch.manual_seed(0)
                got = split.rest(features).float()
                scale = float(want.abs().max().clamp(min=1))
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):
                    return (
                        f"the model computes more after {split.cut} than its later modules in order"
                        if not training
                        else "its frozen layers compute differently in training than in evaluation "
                        "(a dropout inside the forward, such as timm's drop_rate?)"
                    )
    except (RuntimeError, ValueError, TypeError) as e:  # a chain whose shapes do not fit
        return f"the model does not run as a chain of its modules from {split.cut} ({str(e).splitlines()[0]})"
    finally:
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
        model.train(was_training)
    return None
