"""Will a training batch fit in memory? What a step keeps for its backward pass, measured per
image on two images, against the memory free on the run's device - said before the first step,
not found out as a kill by the kernel (write-up 003: rsb-a3's batch of 2,048 through ResNet-50
at 28 px with the small stem needs ~48 GiB; the 24 GiB machine killed it at its first step)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call

from ..config import RunConfig
from ..data.cache import memory_available, size_text
from ..data.prepare import Prepared
from ..errors import VisionbenchError
from ..models.build import auto_settings, input_size_errors
from .device import amp_dtype
from .distill import Teacher
from .distributed import Ranks
from .features import augmentations

# A step's peak over the activations the forward pass saves: measured 1.03 (ResNet-50, 28 px,
# batch 32) and 1.09 (ResNet-18, 224 px, batch 16) on the CPU from the process's peak RSS,
# beyond gradients and momentum; the rest is margin for the allocator and other kernels. Under
# bf16 autocast, rsb-a3's 2,048 as 2 micro-batches of 1,024 (ResNet-50, small stem, 28 px): peak
# RSS 10.9 GiB for 9.5 GiB of activations estimated (1.15x, the whole process included).
OVERHEAD = 1.25
SHARE = 0.8  # of the memory free when training starts: the rest is left to the OS and other work
EVAL_MARGIN = 1.5  # over the largest input + output: a temporary of a kernel, the allocator
STATE_COPIES = 3  # per parameter: its gradient and up to two optimizer states (Adam, LAMB)


@dataclass
class BatchMemory:
    """A training step's memory: `per_image` bytes of activations an image, `fixed` bytes that do
    not grow with the batch, against `free` bytes on the device."""

    per_image: int
    fixed: int
    free: int

    def need(self, batch: int) -> int:
        return self.fixed + int(OVERHEAD * batch * self.per_image)

    def largest_batch(self) -> int:
        return max(0, int((SHARE * self.free - self.fixed) / (OVERHEAD * max(1, self.per_image))))


def saved_bytes(
    model: nn.Module, shape, device: torch.device, amp_dtype=None, channels_last: bool = False
) -> tuple[int, int]:
    """(bytes an image, bytes a step) the forward pass saves for backward: train-mode forwards of
    two and of four images (BatchNorm's running statistics and the random state are left as they
    were), tensors sharing storage counted once, the parameters not at all. What does not grow
    with the batch - the bf16 copies of the weights autocast makes and keeps for backward, 50 MB
    for ResNet-50 - is counted once a step, not once an image (it was: 23.3 MiB an image for
    ResNet-50 at 28 px, where a step's peak RSS showed under 4)."""
    two, four = (saved_in_forward(model, n, shape, device, amp_dtype, channels_last) for n in (2, 4))
    per_image = max(0, four - two) // 2
    return per_image, max(0, two - 2 * per_image)


def saved_in_forward(model: nn.Module, n: int, shape, device, amp_dtype, channels_last: bool) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    buffers = {name: b.clone() for name, b in model.named_buffers()}  # running stats updated on copies
    modes = [(m, m.training) for m in model.modules()]  # restored one by one: frozen BatchNorms stay in eval
    with (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
    ):
        x = torch.rand(n, *shape, device=device)  # n >= 2: BatchNorm needs more than one value per channel
        model.train()
        out = functional_call(
            model, buffers, (x.contiguous(memory_format=torch.channels_last) if channels_last else x,)
        )
    for module, mode in modes:
        module.training = mode
    del out  # the graph, and the storages counted, are freed before the next probe
    return sum(saved.values())


def inference_bytes_per_image(model: nn.Module, shape, device: torch.device, amp_dtype=None) -> int:
    """Bytes an evaluation pass holds at once, per image: the largest input plus output of any
    module (a layer, or a block holding its shortcut while its branch runs), measured in one
    no-grad forward of two images in eval mode; each module's mode is restored."""
    peak = 0

    def nbytes(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        return sum(map(nbytes, value)) if isinstance(value, (tuple, list)) else 0

    def hook(module, args, output):
        nonlocal peak
        peak = max(peak, nbytes(args) + nbytes(output))

    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            torch.no_grad(),
            torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
        ):
            model.eval()
            model(torch.rand(2, *shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    return peak // 2


def device_free(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return memory_available() if device.type == "cpu" else None  # mps: not known


def teacher_memory(teacher: Teacher | None, data: Prepared, device: torch.device, amp=None) -> BatchMemory:
    """A distillation teacher's share of a step: its networks' inference activations an image
    (run one after another under no_grad, beside the student's saved ones: the largest counts),
    and its parameters and buffers with its cached targets (one float32 row a training image,
    cached where the run has no train-time augmentation)."""
    if teacher is None:
        return BatchMemory(0, 0, 0)
    shape = data.dataset.shape
    per_image = max(inference_bytes_per_image(m, shape, device, amp) for m in teacher.models)
    cached = 0 if augmentations(data.cfg.aug) else 4 * len(data.keep) * len(data.dataset.classes)
    return BatchMemory(per_image, teacher.nbytes() + cached, 0)


def batch_memory(model: nn.Module, data: Prepared, ranks: Ranks, amp=None, teacher: Teacher | None = None):
    """What one rank's training step needs and has (the least any rank has), or None where the
    free memory is not known. Processes on one CPU machine share its memory: each counts on its
    share. A distillation `teacher` counts too."""
    device, world = ranks.device, ranks.world
    with input_size_errors(data.cfg, data.dataset):  # the run's first forward pass: too small inputs said
        per_image, per_step = saved_bytes(
            model, data.dataset.shape, device, amp, data.cfg.train.channels_last
        )
    free = ranks.least(device_free(device) or -1)  # -1: not known (on some rank: none checks)
    if free < 0:
        return None
    arrays = sum(s.images.nbytes for s in data.dataset.splits.values() if isinstance(s.images, np.ndarray))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    shared = world if device.type == "cpu" else 1
    taught = teacher_memory(teacher, data, device, amp)
    fixed = STATE_COPIES * params + arrays + taught.fixed + per_step
    return BatchMemory(per_image + taught.per_image, fixed, free // shared)


def fit_batch(
    cfg: RunConfig,
    asked: RunConfig,
    data: Prepared,
    model: nn.Module,
    ranks: Ranks,
    say: Callable[[str], None] = print,
    resumed: bool = False,
    teacher: Teacher | None = None,
) -> RunConfig:
    """The run's config with training and evaluation batches that fit in memory (or an error);
    a distillation `teacher`'s networks take their share."""
    amp = amp_dtype(cfg.train.amp, ranks.device)
    mem = batch_memory(model, data, ranks, amp, teacher)
    if mem is None:
        return cfg
    cfg = fit_train_batch(cfg, asked, data, mem, ranks, say, resumed)
    return fit_eval_batch(cfg, data, model, mem, amp, ranks.device, say)


def input_text(cfg: RunConfig, data: Prepared) -> str:
    """The size the network runs at: model.input_size where each batch is resized to it."""
    side = cfg.model.input_size
    return f"{side}x{side}" if side else "x".join(map(str, data.dataset.shape[1:]))


def smaller_input(cfg: RunConfig) -> str:
    """A fix that works for this run: data.img_size applies to folders and CSV lists only."""
    if cfg.model.input_size:
        return "use a smaller model or a smaller model.input_size"
    if cfg.data.name.startswith(("folder:", "csv:")):
        return "use a smaller model or a smaller data.img_size"
    return "use a smaller model"


def fit_train_batch(
    cfg: RunConfig, asked: RunConfig, data: Prepared, mem: BatchMemory, ranks: Ranks, say, resumed: bool
) -> RunConfig:
    """A batch chosen from the data (`asked` left it unset) is halved until it fits, in one line
    said (the lr scaled with it when it was chosen too); a set batch that does not fit runs as
    micro-batches that do, their gradients accumulated into one step (train.accumulate), also
    said. A resumed run keeps its batch and micro-batches (its steps depend on them)."""
    device, world = ranks.device, ranks.world
    batch, parts = cfg.train.batch_size, cfg.train.accumulate
    micro = -(-min(batch, len(data.keep)) // (world * parts))  # more than the images: they are a batch
    if micro <= mem.largest_batch():
        return cfg
    largest = mem.largest_batch() * world
    why = (
        f"a batch of {batch:,} needs about {size_text(mem.need(-(-batch // (world * parts))))} of memory "
        f"in training ({size_text(mem.per_image)} an image for {cfg.model.name}'s activations"
        f"{' and its teacher' * bool(cfg.train.teacher)} at "
        f"{input_text(cfg, data)} px), more than {SHARE:.0%} of the {size_text(mem.free)} free on {device}"
    )
    if largest < world:
        raise VisionbenchError(why, fix=smaller_input(cfg))
    if asked.train.batch_size is None and not resumed:
        while batch > largest:
            batch //= 2
        smaller = asked.model_copy(update={"train": asked.train.model_copy(update={"batch_size": batch})})
        cfg, notes = auto_settings(smaller, len(data.keep), data.dataset.shape, data.dataset.originals)
        notes = [f"train.batch_size={batch}: {why}; set train.batch_size=N to choose", *notes]
    elif not resumed:
        parts = -(-batch // largest)  # the fewest micro-batches a rank can hold
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"accumulate": parts})})
        notes = [
            *data.choices,
            f"train.accumulate={parts}: {why}; it runs as {parts} micro-batches of at most "
            f"{-(-batch // (world * parts)):,} a step, their gradients summed into the batch's "
            "(BatchNorm sees the micro-batches); set train.accumulate=N to choose",
        ]
    else:
        fits = (1 << ((largest // world).bit_length() - 1)) * world  # a power of two a rank
        raise VisionbenchError(
            why,
            fix=f"resume where more memory is free, or train it again under another name with "
            f"train.batch_size={fits} and optim.lr={cfg.optim.lr * fits / batch:.3g}",
        )
    for note in notes:
        if note not in data.choices:  # the image size and stem were said already
            say(note)
    data.cfg, data.choices = cfg, notes
    return cfg


def fit_eval_batch(cfg: RunConfig, data: Prepared, model, mem: BatchMemory, amp, device, say) -> RunConfig:
    """The evaluation batch (1,024 images unless set) brought down to what an inference pass
    holds in the memory left beside the training state: VGG16 at 224 px holds ~25 MiB an image,
    so 1,024 of them would not fit in 24 GiB. Halving it changes no result, only the passes, so
    a set (or resumed) one is halved too, and said."""
    batch = cfg.train.eval_batch_size
    per_image = EVAL_MARGIN * inference_bytes_per_image(model, data.dataset.shape, device, amp)
    left = max(0, int(SHARE * mem.free - mem.fixed))
    fits = int(left / max(1, per_image))
    if batch <= fits:
        return cfg
    why = (
        f"an evaluation batch of {batch:,} holds about {size_text(int(batch * per_image))} at once "
        f"({size_text(int(per_image))} an image for {cfg.model.name} at {input_text(cfg, data)} px), "
        f"more than the {size_text(left)} left beside training on {device}"
    )
    if fits < 1:
        raise VisionbenchError(why, fix=smaller_input(cfg))
    while batch > fits:
        batch //= 2
    note = f"train.eval_batch_size={batch}: {why}; the evaluation batch changes no result"
    say(note)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"eval_batch_size": batch})})
    data.cfg, data.choices = cfg, [*data.choices, note]
    return cfg
