"""Freezing as a schedule: stages such as "the head alone for 3 epochs, then every layer with
the backbone's learning rate x 0.1". The stage in force is part of the checkpoint, so a resumed
run continues in the stage it stopped in (Lightning's BackboneFinetuning loses it on resume:
Lightning-AI/pytorch-lightning#6551, #21901)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import FinetuneConfig, FreezeStage
from ..errors import VisionbenchError, did_you_mean
from ..models import head_name


def frozen_params(model: nn.Module, spec: str, head: str) -> set[str]:
    """Names of the parameters `spec` freezes: 'none', 'head-only' (all but the head) or
    'until:<layer>' (every parameter before that layer's first one)."""
    names = [n for n, _ in model.named_parameters()]
    if spec == "none":
        return set()
    if spec == "head-only":
        return {n for n in names if not (n == head or n.startswith(head + "."))}
    if spec.startswith("until:"):
        layer = spec.split(":", 1)[1]
        first = next((i for i, n in enumerate(names) if n.startswith(layer + ".")), None)
        if first is None:
            layers = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters())]
            raise VisionbenchError(
                f"no layer '{layer}' with parameters in this model.{did_you_mean(layer, layers)}",
                fix=f"top-level layers: {', '.join(n for n, _ in model.named_children())}",
            )
        return set(names[:first])
    raise VisionbenchError(
        f"unknown freeze '{spec}'", fix="use head-only, until:<layer> (e.g. until:layer3) or none"
    )


def held_batchnorms(model: nn.Module, frozen: set[str]) -> list[nn.Module]:
    """The BatchNorm layers whose parameters are all in `frozen`: with finetune.bn_eval they
    stay in eval mode, their running statistics fixed, while the rest trains."""
    held = []
    for name, m in model.named_modules():
        params = [f"{name}.{n}" if name else n for n, _ in m.named_parameters(recurse=False)]
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and frozen.issuperset(params):
            held.append(m)
    return held


def split_head_groups(optimizer: torch.optim.Optimizer, model: nn.Module, head: str) -> None:
    """Split each parameter group into backbone and head groups (same settings), so the
    backbone's learning rate can be scaled on its own. Call before creating the scheduler."""
    backbone = {id(p) for n, p in model.named_parameters() if not (n == head or n.startswith(head + "."))}
    groups = []
    for g in optimizer.param_groups:
        for is_backbone in (True, False):
            params = [p for p in g["params"] if (id(p) in backbone) == is_backbone]
            if params:
                groups.append({**g, "params": params, "backbone": is_backbone, "lr_mult": 1.0})
    optimizer.param_groups = groups


class StagedFreezing:
    """Which parameters train, at what learning-rate multiple, in each epoch of the run."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: FinetuneConfig, epochs: int):
        self.model, self.optimizer, self.bn_eval = model, optimizer, cfg.bn_eval
        self.stages = cfg.stages or [FreezeStage(freeze=cfg.freeze, backbone_lr_mult=cfg.backbone_lr_mult)]
        self.ends, end = [], 0
        for i, s in enumerate(self.stages):
            if s.epochs is None and i < len(self.stages) - 1:
                raise VisionbenchError(
                    "only the last finetune stage may leave out epochs",
                    fix="give every other stage its epochs",
                )
            if s.backbone_lr_mult <= 0:
                raise VisionbenchError(
                    "backbone_lr_mult must be > 0", fix="freeze the backbone instead of lr 0"
                )
            end = epochs if s.epochs is None else end + s.epochs
            self.ends.append(end)
        self.epochs = epochs
        self.head = head_name(model)
        self.fixed = {n for n, p in model.named_parameters() if not p.requires_grad}  # by the model itself
        self.frozen = [frozen_params(model, s.freeze, self.head) for s in self.stages]  # bad specs fail here
        self.active = any(self.frozen) or any(s.backbone_lr_mult != 1 for s in self.stages)
        if self.active:
            split_head_groups(optimizer, model, self.head)
        self.stage: int | None = None
        self.hooks: list = []

    def unreached(self) -> str | None:
        """A warning naming the stages that start after the run's last epoch, or None when
        every stage gets at least one epoch."""
        starts = [0, *self.ends[:-1]]
        never = [i for i, start in enumerate(starts) if start >= self.epochs]
        if not never:
            return None
        n = len(self.stages)
        names = ", ".join(
            f"{i + 1}/{n} (freeze {self.stages[i].freeze}, from epoch {starts[i] + 1})" for i in never
        )
        plural = len(never) > 1
        return (
            f"warning: finetune stage{'s' if plural else ''} {names} never run{'' if plural else 's'} "
            f"within train.epochs={self.epochs}; set train.epochs={starts[-1] + 1} or more, "
            "or shorten the epochs in finetune.stages"
        )

    def stage_at(self, epoch: int) -> int:
        return next((i for i, end in enumerate(self.ends) if epoch < end), len(self.stages) - 1)

    def enter(self, epoch: int, scheduler) -> str | None:
        """Switch to `epoch`'s stage if it is a new one (says what changed, for the log); a
        model with its own per-epoch schedule of what trains (fastnet's whitening bias) is told
        the epoch after that."""
        message = self.enter_stage(epoch, scheduler)
        if hasattr(self.model, "start_epoch"):
            self.model.start_epoch(epoch)
        return message

    def enter_stage(self, epoch: int, scheduler) -> str | None:
        i = self.stage_at(epoch)
        if not self.active or i == self.stage:
            return None
        self.apply(i)
        mult = self.stages[i].backbone_lr_mult
        for k, g in enumerate(self.optimizer.param_groups):
            new = mult if g["backbone"] else 1.0
            g["lr"] *= new / g["lr_mult"]
            scheduler.base_lrs[k] = g["initial_lr"] * new
            g["lr_mult"] = new
        n = len(self.frozen[i])
        return (
            f"finetune stage {i + 1}/{len(self.stages)} from epoch {epoch + 1}: freeze {self.stages[i].freeze}"
            f" ({n} parameter tensors frozen), backbone lr x {mult:g}"
        )

    def apply(self, i: int) -> None:
        """Freeze stage `i`'s parameters (learning rates are the optimizer's and scheduler's state)."""
        self.stage = i
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in self.frozen[i] and name not in self.fixed)
        for h in self.hooks:
            h.remove()
        self.hooks = []
        if self.bn_eval:
            for m in held_batchnorms(self.model, self.frozen[i] | self.fixed):
                # model.train() runs every epoch; this keeps a frozen BN's statistics fixed
                self.hooks.append(m.register_forward_pre_hook(lambda mod, _: setattr(mod, "training", False)))

    def state_dict(self) -> dict:
        return {"stage": self.stage}

    def load_state_dict(self, state: dict) -> None:
        if self.active and state.get("stage") is not None:
            self.apply(state["stage"])
