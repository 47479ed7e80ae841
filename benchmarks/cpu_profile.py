"""Where the time of the `fast` recipe goes on the CPU: torch.profiler over one epoch of it on
CIFAR-10, then its one test pass with the recipe's TTA views, with the run's autocast.

It drives the product's own training (`visionbench.commands.train.train`, the recipe with
`train.epochs=1`: the per-step work is the same at any point of the 10-epoch run but for the
whitening bias, which trains in the first 3 of them). Nothing in src/ is edited: this script
wraps four of the product's functions in `torch.profiler.record_function` ranges for the
duration of the run - `engine.loop.train_one_epoch` (the epoch), `TensorLoader.epoch`'s
batches (loader + augmentation), `engine.loop.optimizer_step` and `Lookahead.update` - and
the test pass (`predict` as `commands.train` calls it). Every op's CPU *self* time is then put
in one group: inside the test pass -> evaluation + TTA; inside the loader, the optimizer step
(or torch's own `Optimizer.*` ranges: zero_grad) or Lookahead -> that; else, inside the epoch,
by the op or the nearest enclosing op's name: convolution (forward and backward, autocast's
casts included), BatchNorm, GELU, pooling, loss, and other (the linear head, the backward
engine's gradient accumulation, the schedule, the sums of loss and accuracy). Work outside the
epoch and the test pass (decoding the cached arrays, whitening, checkpoints, the run record) is
shown on one line apart, outside the shares.

    python benchmarks/cpu_profile.py --data-dir ../shared/data [--steps N] [--trace trace.json] [--quick]

`--steps N`: only the first N batches of the epoch. `--quick`: 3 steps at batch 128 on 40
training images a class, tested on 10 a class - a check of the code path, not a profile.
The chrome trace (`--trace`) opens in chrome://tracing or https://ui.perfetto.dev.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from cpu_cifar10 import ROOT, fast_config
from torch.profiler import ProfilerActivity, profile, record_function

EPOCH, LOADER, OPTIMIZER, LOOKAHEAD, EVAL = "vb:epoch", "vb:loader", "vb:optimizer", "vb:lookahead", "vb:eval"
# an op's group inside the epoch: the first pattern found in its name or an enclosing op's
OP_GROUPS = (
    ("convolution (fwd+bwd)", ("conv",)),
    ("BatchNorm", ("batch_norm", "batchnorm")),
    ("activations (GELU)", ("gelu",)),
    ("pooling", ("pool",)),
    ("loss", ("cross_entropy", "log_softmax", "logsoftmax", "nll_loss", "nllloss")),
)
GROUPS = (
    *(g for g, _ in OP_GROUPS),
    "optimizer step",
    "lookahead",
    "loader + augmentation",
    "other",
)
QUICK = ["data.per_class=40", "data.test_per_class=10", "train.batch_size=128"]


def wrapped_in(label: str, fn):
    """`fn` running inside the profiler range `label`."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)

    return inner


def labelled_batches(epoch_fn, steps: int | None):
    """TensorLoader.epoch whose every batch is made inside the range LOADER; a training epoch
    cut to its first `steps` batches (the loop then ends the epoch as a whole one)."""

    @functools.wraps(epoch_fn)
    def epoch(self, *args, **kwargs):
        batches = epoch_fn(self, *args, **kwargs)
        if self.train and steps:
            batches = itertools.islice(batches, steps)
        while True:
            with record_function(LOADER):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    return epoch


@contextmanager
def product_ranges(steps: int | None):
    """The product's epoch, loader, optimizer step, Lookahead and test pass, each in its range."""
    from visionbench.commands import train as train_command
    from visionbench.data.loader import TensorLoader
    from visionbench.engine import loop
    from visionbench.engine.ema import Lookahead

    patches = [
        (loop, "train_one_epoch", wrapped_in(EPOCH, loop.train_one_epoch)),
        (loop, "optimizer_step", wrapped_in(OPTIMIZER, loop.optimizer_step)),
        (Lookahead, "update", wrapped_in(LOOKAHEAD, Lookahead.update)),
        (train_command, "predict", wrapped_in(EVAL, train_command.predict)),
        (TensorLoader, "epoch", labelled_batches(TensorLoader.epoch, steps)),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, new in patches:
            setattr(owner, name, new)
        yield
    finally:
        for owner, name, old in saved:
            setattr(owner, name, old)


def op_group(names: list[str]) -> str:
    """The group of an op inside the epoch from its name and its enclosing ops' (innermost first)."""
    for name in names:
        low = name.lower()
        for group, patterns in OP_GROUPS:
            if any(p in low for p in patterns):
                return group
    return "other"


def group_of(event) -> str:
    """The group an op's self time goes to: evaluation, a wrapped step, an op group, or outside."""
    names, e = [], event
    while e is not None:
        names.append(e.name)
        e = e.cpu_parent
    if EVAL in names:
        return "evaluation + TTA"
    if EPOCH not in names:
        return "outside"
    inner = names[: names.index(EPOCH)]
    if LOOKAHEAD in inner:
        return "lookahead"
    if OPTIMIZER in inner or any(n.startswith("Optimizer.") for n in inner):
        return "optimizer step"
    if LOADER in inner:
        return "loader + augmentation"
    return op_group(inner)


def self_times(prof) -> tuple[dict[str, float], dict[str, float]]:
    """ms of CPU self time per group, for the run and for the test pass alone (by op group)."""
    groups, in_eval = defaultdict(float), defaultdict(float)
    for e in prof.events():  # a range's own self time is its Python between ops: that group's too
        g = group_of(e)
        groups[g] += e.self_cpu_time_total / 1e3
        if g == "evaluation + TTA":
            in_eval[op_group([e.name, *ancestors(e)])] += e.self_cpu_time_total / 1e3
    return groups, in_eval


def ancestors(event) -> list[str]:
    out, e = [], event.cpu_parent
    while e is not None:
        out.append(e.name)
        e = e.cpu_parent
    return out


def table(groups: dict[str, float], in_eval: dict[str, float], steps: int, views: int) -> str:
    epoch = sum(groups[g] for g in GROUPS)
    whole = epoch + groups["evaluation + TTA"]
    lines = [
        "| group | ms | % of the epoch | % of epoch + test pass |",
        "|---|---|---|---|",
        *(f"| {g} | {groups[g]:.0f} | {groups[g] / epoch:.1%} | {groups[g] / whole:.1%} |" for g in GROUPS),
        f"| **the epoch ({steps} steps)** | {epoch:.0f} | 100% | {epoch / whole:.1%} |",
        f"| evaluation + TTA (one test pass, {views} views) | {groups['evaluation + TTA']:.0f} | - | "
        f"{groups['evaluation + TTA'] / whole:.1%} |",
        f"| (outside: data, whitening, checkpoint, record) | {groups['outside']:.0f} | - | - |",
        "",
        "test pass by op: "
        + ", ".join(
            f"{g.removesuffix(' (fwd+bwd)')} {ms:.0f} ms"
            for g, ms in sorted(in_eval.items(), key=lambda kv: -kv[1])
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-dir", default=os.environ.get("VISIONBENCH_DATA", str(ROOT.parent / "shared" / "data"))
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="profile the first N batches (default: the epoch)"
    )
    ap.add_argument("--trace", default=None, help="write a chrome trace here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    from visionbench.commands.train import train
    from visionbench.engine.device import amp_dtype, pick_device
    from visionbench.engine.tta import tta_views

    steps = args.steps or (3 if args.quick else None)
    overrides = ["train.epochs=1", *(QUICK if args.quick else [])]
    cfg = fast_config(args.seed, str(Path(args.data_dir).resolve()), overrides, "profile")
    with tempfile.TemporaryDirectory() as runs, product_ranges(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run = train(cfg, runs_dir=runs, quiet=True)
        summary, rows = run.read_json("summary.json"), run.metrics()
    groups, in_eval = self_times(prof)
    views = max(1, len(tta_views(cfg.train.tta)))
    dtype = amp_dtype(cfg.train.amp, pick_device(cfg.train.device)) or torch.float32
    print(
        f"fast recipe, 1 epoch{f' cut to {steps} steps' if steps else ''}, batch {cfg.train.batch_size}, "
        f"{torch.get_num_threads()} threads, autocast {str(dtype).removeprefix('torch.')}, torch {torch.__version__}"
        f"{'; --quick: a tiny slice, not a profile' if args.quick else ''}"
    )
    print(
        f"{rows[0]['images_per_s']:.0f} train img/s under the profiler; test pass on {summary['test_n']:,} "
        f"images: {summary['test_acc']:.2%}\n"
    )
    trained = round(rows[0]["images_per_s"] * rows[0]["seconds"] / cfg.train.batch_size)
    print(table(groups, in_eval, trained, views))
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"\nchrome trace: {args.trace}")


if __name__ == "__main__":
    main()
