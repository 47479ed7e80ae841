"""CIFAR-10 on the CPU: the `fast` recipe's accuracy and wall time, its MFU, and the typical
pipeline given the same minutes.

(a) `visionbench train --recipe fast --data cifar10` on our JPEG copy, once per seed, each a
    fresh process timed from its start to its exit; test accuracy is with the recipe's
    flip + translate test-time augmentation.
(b) MFU: inside each of those processes, the matmul peak of this CPU is measured first (4096^2
    matmuls in the dtype the run computes in: bf16 where it autocasts, else fp32, same threads),
    then the run's model FLOP/s: FLOPs per trained image (forward + backward, counted by
    torch.utils.flop_counter on fastnet at 32 px) x images trained / seconds in training epochs.
(c) The typical pipeline, side by side at the median wall time of (a): torchvision ResNet-18,
    `ImageFolder` + PIL transforms (random crop 4, flip, ToTensor, Normalize) +
    `DataLoader(num_workers=2)`, SGD momentum 0.9 with OneCycleLR, batch 128, fp32 - its step
    count sized from its own measured speed to end inside the budget (test pass included).

    python benchmarks/cpu_cifar10.py [--seeds 0 1] [--data-dir ../shared/data] [--skip-typical]

Last line: `accuracy X% in Y min, MFU Z%` (means over the seeds).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(dtype, threads: int, n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` n x n matmuls in `dtype` on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: oneDNN/MKL pick their kernels
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def train_flops_per_image(cfg, backward: bool = True) -> float:
    """Forward + backward FLOPs of one training image through the run's model at the size it
    runs at (model.input_size, else CIFAR's 32 px); `backward=False`: one test view's forward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from visionbench.models import create_model

    size = cfg.model.input_size or 32
    model = create_model(cfg.model.name, num_classes=10, img_size=size, **cfg.model.kwargs)
    x = torch.randn(8, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        out = model(x) if backward else model.eval()(x)
        if backward:
            out.sum().backward()
    return counter.get_total_flops() / len(x)


@functools.cache
def flops_per_image(model: str) -> tuple[float, float]:
    """(forward + backward, forward) FLOPs of one image through the model of the config `model`
    (its JSON), counted once per model and size."""
    from visionbench.config import RunConfig

    cfg = RunConfig.model_validate_json(model)
    return train_flops_per_image(cfg), train_flops_per_image(cfg, backward=False)


def epoch_flops(cfg) -> list[float]:
    """Forward + backward FLOPs of one training image in each epoch of `cfg`: at the side it
    trains at (train.progressive: smaller in the early epochs)."""
    from visionbench.config import RunConfig
    from visionbench.engine.schedules import progressive_sides

    full = cfg.model.input_size or 32
    sides = progressive_sides(cfg.train.epochs, full, cfg.train.progressive)
    at = lambda side: RunConfig(model=cfg.model.model_copy(update={"input_size": side})).model_dump_json()
    return [flops_per_image(at(side))[0] for side in sides]


def fast_config(seed: int, data_dir: str, overrides: list[str] = (), name: str = "fast"):
    """The `fast` recipe on the CIFAR-10 JPEG copy at `data_dir`, with `overrides` (key=value)."""
    from visionbench.config import resolve_config

    cli = {"data": {"name": "cifar10", "dir": data_dir}}
    return resolve_config([], [*overrides, f"seed={seed}", f"name={name}-seed{seed}"], cli, "fast")


def one_run(
    seed: int,
    data_dir: str,
    runs_dir: str,
    out: str,
    overrides: list[str] = (),
    name: str = "fast",
    peak_n: int = 4096,
) -> None:
    """A child process: peak (`peak_n`^2 matmuls), then the fast run (with `overrides`) in this
    process, then its MFU -> `out` JSON."""
    import torch

    from visionbench.commands.train import train
    from visionbench.engine.device import amp_dtype, pick_device

    cfg = fast_config(seed, data_dir, overrides, name)
    autocast = amp_dtype(cfg.train.amp, pick_device(cfg.train.device))
    threads = cfg.train.threads or os.cpu_count() or 1
    peak = matmul_peak(autocast or torch.float32, threads, peak_n)
    run = train(cfg, runs_dir=runs_dir, quiet=True)
    rows, summary = run.metrics(), run.read_json("summary.json")
    images = sum(r["images_per_s"] * r["seconds"] for r in rows)
    per_epoch = epoch_flops(cfg)  # at each epoch's side (train.progressive)
    trained = sum(f * r["images_per_s"] * r["seconds"] for f, r in zip(per_epoch, rows))
    flops = trained / sum(r["seconds"] for r in rows)
    Path(out).write_text(
        json.dumps(
            {
                "seed": seed,
                "test_acc": summary["test_acc"],
                "train_seconds": summary["train_seconds"],
                "images_per_s": statistics.median(r["images_per_s"] for r in rows),
                "model_flops_per_s": flops,
                "peak_flops_per_s": peak,
                "dtype": str(autocast or torch.float32).removeprefix("torch."),
                "mfu": flops / peak,
                "epochs": len(rows),
                "train_images": images,
                "test_images": summary["test_n"],
            }
        )
    )


def timed_child(args: list[str], out: str) -> dict:
    """`python ARGS` as a fresh process; the JSON it wrote to `out`, with its wall time from the
    process's start to its exit (`wall`, seconds)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True)
    return json.loads(Path(out).read_text()) | {"wall": time.perf_counter() - t}


TYPICAL = r"""
import json, sys, time
import torch, torch.nn as nn, torchvision
from torch.utils.data import DataLoader
from torchvision import transforms as T
t0 = time.perf_counter()
root, budget = sys.argv[1], float(sys.argv[2])
torch.manual_seed(0)
norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
train_set = torchvision.datasets.ImageFolder(f"{root}/train", T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
test_set = torchvision.datasets.ImageFolder(f"{root}/test", T.Compose([T.ToTensor(), norm]))
train_loader = DataLoader(train_set, batch_size=128, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
test_loader = DataLoader(test_set, batch_size=512, num_workers=2)
model = torchvision.models.resnet18(num_classes=10)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
loss_fn = nn.CrossEntropyLoss()

def step(x, y):
    loss = loss_fn(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

# measure its own speed for 20 steps (they train too), then size one-cycle to end in budget,
# keeping time for the test pass (a forward is ~1/3 of a training step)
model.train()
batches = iter(train_loader)
t = time.perf_counter()
for _ in range(20):
    step(*next(batches))
per_step = (time.perf_counter() - t) / 20
test_time = len(test_set) / 128 * per_step / 3
total = max(1, int((budget - (time.perf_counter() - t0) - test_time) / per_step))
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total)
done = 0
while done < total:
    for x, y in batches:
        step(x, y)
        sched.step()
        done += 1
        if done == total:
            break
    batches = iter(train_loader)
model.eval()
correct = 0
with torch.no_grad():
    for x, y in test_loader:
        correct += (model(x).argmax(1) == y).sum().item()
print(json.dumps({"test_acc": correct / len(test_set), "steps": 20 + total, "epochs": (20 + total) / len(train_loader),
                  "wall_in_process": time.perf_counter() - t0}))
"""


def run_typical(data_dir: Path, budget: float) -> dict:
    """The typical pipeline on the extracted JPEGs, for `budget` seconds from process start."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(data_dir / "cifar10-jpg.tar.gz") as tar:
            tar.extractall(tmp, filter="data")  # setup, outside the budget
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", TYPICAL, f"{tmp}/cifar10-jpg", str(budget)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        wall = time.perf_counter() - t
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--skip-typical", action="store_true")
    ap.add_argument("--one-run", nargs=3, metavar=("SEED", "RUNS_DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    if args.one_run:
        seed, runs_dir, out = args.one_run
        return one_run(int(seed), data_dir, runs_dir, out)

    import torch

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = f"{tmp}/seed{seed}.json"
            runs.append(
                timed_child([__file__, "--data-dir", data_dir, "--one-run", str(seed), tmp, out], out)
            )
            r = runs[-1]
            print(
                f"seed {seed}: {r['test_acc']:.2%} in {r['wall'] / 60:.1f} min "
                f"({r['images_per_s']:.0f} img/s, {r['dtype']}, MFU {r['mfu']:.1%})",
                flush=True,
            )
    acc = statistics.mean(r["test_acc"] for r in runs)
    wall = statistics.median(r["wall"] for r in runs)
    mfu = statistics.mean(r["mfu"] for r in runs)
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    print("| run | test acc | wall (min) | train img/s | dtype | model GFLOP/s | peak GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| fast seed {r['seed']} | {r['test_acc']:.2%} | {r['wall'] / 60:.1f} | {r['images_per_s']:.0f} | "
            f"{r['dtype']} | {r['model_flops_per_s'] / 1e9:.0f} | {r['peak_flops_per_s'] / 1e9:.0f} | {r['mfu']:.1%} |"
        )
    if not args.skip_typical:
        typical = run_typical(Path(data_dir), wall)
        print(
            f"| typical ResNet-18 pipeline, same budget | {typical['test_acc']:.2%} | {typical['wall'] / 60:.1f} | "
            f"- | float32 | - | - | - |  ({typical['epochs']:.2f} epochs)"
        )
    print(f"accuracy {acc:.2%} in {wall / 60:.1f} min, MFU {mfu:.0%}")


if __name__ == "__main__":
    main()
