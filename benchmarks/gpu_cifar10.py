"""visionbench's `fast` recipe against airbench94 (airbench 0.1.8) on CIFAR-10 (JPEG q75), same
GPU, same decoded images, runs interleaved.

    pip install airbench==0.1.8        # offline: benchmarks/gpu_all.sh installs it from wheels
    python benchmarks/gpu_cifar10.py --runs 5 --data-dir ../shared/data
    python benchmarks/gpu_cifar10.py --tiny --device cpu    # the code path on a CPU in < 1 min

Both sides train on the 50,000 train images and are tested on the 10,000 test images of the
same decoded copy (`cifar10-jpg.tar.gz` through visionbench's array cache, decoded before any
timing). airbench's CifarLoader reads them from `cifar10/{train,test}.pt` in a scratch folder
that this script writes and runs in: airbench 0.1.8's `train94` opens its own test set as the
relative path `cifar10` (and downloads CIFAR-10 there when it is missing).

- **visionbench**: `commands.train.train` with `--recipe fast` (what `visionbench train --recipe
  fast --data cifar10` runs), seeds 0..runs-1; its test accuracy is the run's summary.json
  (with the test-time augmentation the recipe evaluates with). Time: the call, end to end
  (loader set-up from the cache, training, the test pass, the run record with its figures);
  the epochs' own seconds are reported beside it.
- **airbench94**: `airbench.train94(loader, run=r, verbose=False)` with its own CifarLoader
  (batch 1024, flip + translate 2, alternating flips: train94's defaults), which returns the
  trained network and evaluates nothing; then `airbench.evaluate(net, test_loader,
  tta_level=2)`, its own TTA (mirror + 1 px translations) on its own test loader (batch 2000),
  as train94 does when verbose. Time: both calls (network build, whitening init, training,
  TTA evaluation); the train loader is built once, outside the timing.
- One untimed warm-up of each first (airbench's README: the first run is slower). visionbench's
  runs switch on deterministic kernels and switch off cuDNN's autotuner for the whole process:
  airbench's settings (cudnn.benchmark on, no deterministic algorithms) are put back before
  each of its runs, so it is never timed under ours.

The bar (issue 13): fast's mean test accuracy >= airbench94's, in <= 1.5x airbench94's median time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.data import load_dataset

TIME_RATIO_BAR = 1.5
TTA_LEVEL = 2  # airbench94's hyp['net']['tta_level']: mirror + translate
TINY = {"train": 1000, "test": 200, "per_class": 20, "test_per_class": 10}  # --tiny slices


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fast_run(args, seed: int, runs_dir: Path, epochs: int | None = None) -> dict:
    """One `--recipe fast` run: test accuracy, wall seconds of the call, seconds in epochs."""
    overrides = [
        f"seed={seed}",
        "data.name=cifar10",
        f"data.dir={Path(args.data_dir).resolve()}",
        "data.val_fraction=0",  # all 50,000 train images, as airbench trains on
        f"train.device={args.device}",
    ]
    if args.tiny:
        overrides += [f"data.per_class={TINY['per_class']}", f"data.test_per_class={TINY['test_per_class']}"]
        overrides += ["train.epochs=1", "train.threads=1"]
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    cfg = resolve_config([], overrides + args.set, recipe="fast")
    sync(args.device)
    t0 = time.perf_counter()
    run = train(cfg, runs_dir, quiet=True)
    sync(args.device)
    summary = run.read_json("summary.json")
    return {
        "acc": summary["test_acc"],
        "seconds": time.perf_counter() - t0,
        "train_s": summary["train_seconds"],
    }


def export_for_airbench(data_dir: str, folder: Path, tiny: bool) -> None:
    """{images: uint8 NHWC, labels: int64, classes} in folder/cifar10/{train,test}.pt, the file
    format airbench's CifarLoader reads (and writes, from torchvision's CIFAR10, when missing).
    --tiny: the first images of each class (the cache keeps a split sorted by class)."""
    ds = load_dataset("cifar10", data_dir)
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        s = ds.splits[split]
        labels = np.asarray(s.labels)
        keep = slice(None)
        if tiny:
            per_class = TINY[split] // len(ds.classes)
            keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(ds.classes))])
        images = torch.from_numpy(np.array(s.images[keep])).permute(0, 2, 3, 1).contiguous()
        labels = torch.from_numpy(labels[keep]).long()  # CrossEntropyLoss wants int64 targets
        torch.save(
            {"images": images, "labels": labels, "classes": ds.classes}, folder / "cifar10" / f"{split}.pt"
        )


def import_airbench():
    """airbench, or None with the reason said once."""
    try:
        import airbench
    except ImportError as e:
        print(f"airbench is not importable ({e}): pip install airbench==0.1.8 -- airbench94 side skipped")
        return None
    return airbench


def airbench_settings() -> None:
    """What importing airbench94 sets (cudnn.benchmark on) and what visionbench's runs change
    process-wide (deterministic algorithms), put back to airbench's own."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True


def airbench_run(airbench, train_loader, test_loader, run: int, device: str) -> dict:
    airbench_settings()
    sync(device)
    t0 = time.perf_counter()
    net = airbench.train94(train_loader, run=run, verbose=False)  # returns the network, evaluates nothing
    acc = airbench.evaluate(net, test_loader, tta_level=TTA_LEVEL)
    sync(device)
    return {"acc": acc, "seconds": time.perf_counter() - t0}


class Float(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def airbench_tiny_check(airbench, train_loader, test_loader) -> dict:
    """--tiny without CUDA (train94 builds its network with .cuda()): one batch from airbench's
    loader and its TTA evaluation of a stand-in network, i.e. our files in airbench's format
    and the evaluate() call as the GPU run makes it."""
    x, y = next(iter(train_loader))
    assert x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64, (x.shape, y.dtype)
    stand_in = nn.Sequential(
        Float(), nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    t0 = time.perf_counter()
    acc = airbench.evaluate(stand_in, test_loader, tta_level=TTA_LEVEL)
    return {"acc": acc, "seconds": time.perf_counter() - t0}


@contextmanager
def working_dir(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def describe(rows: list[dict]) -> tuple[float, float, float]:
    """(mean accuracy, its standard deviation, median seconds)."""
    accs = [r["acc"] for r in rows]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return statistics.mean(accs), sd, statistics.median(r["seconds"] for r in rows)


def table(ours: list[dict], theirs: list[dict], device_name: str, cuda: bool) -> list[str]:
    """RESULTS.md rows, and the bar's verdict."""
    lines = [
        "| pipeline | runs | test acc, mean ± std | median s | per run (acc / s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    reference = "airbench94 (0.1.8, TTA level 2)" if cuda else "airbench evaluate(), stand-in network"
    for name, rows in (("visionbench `--recipe fast`", ours), (reference, theirs)):
        if rows:
            mean, sd, med = describe(rows)
            runs = ", ".join(f"{r['acc']:.2%} / {r['seconds']:.1f}" for r in rows)
            lines.append(f"| {name} | {len(rows)} | {mean:.2%} ± {sd:.2%} | {med:.2f} | {runs} |")
    epochs_s = statistics.median(r["train_s"] for r in ours)
    lines.append(
        f"\nvisionbench's epochs alone: median {epochs_s:.2f} s of its wall time. Device: {device_name}."
    )
    if theirs and cuda:
        (a, _, ta), (b, _, tb) = describe(ours), describe(theirs)
        ok = a >= b and ta <= TIME_RATIO_BAR * tb
        lines.append(
            f"bar: fast {a:.2%} vs airbench94 {b:.2%} ({a - b:+.2%}), time ratio {ta / tb:.2f}x "
            f"(<= {TIME_RATIO_BAR}x) -> {'MET' if ok else 'NOT MET'}"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--tiny", action="store_true", help="code-path check: a slice of the data, 1 epoch, 1 run"
    )
    ap.add_argument("--no-airbench", action="store_true", help="visionbench's side only")
    ap.add_argument("--results", type=Path, help="append the RESULTS.md rows to this file")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of the fast recipe")
    args = ap.parse_args()
    runs = 1 if args.tiny else args.runs
    cuda = args.device.startswith("cuda")
    airbench = None if args.no_airbench else import_airbench()
    if airbench is not None and not cuda and not args.tiny:
        print("airbench94 trains on CUDA only (train94 calls .cuda()) -- airbench94 side skipped")
        airbench = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_for_airbench(args.data_dir, tmp, args.tiny)  # decodes the JPEGs into the cache once, untimed
        ours, theirs = [], []
        with working_dir(tmp):  # train94 opens 'cifar10' relative to here
            if airbench is not None:
                gpu = (torch.device(args.device).index or 0) if cuda else "cpu"
                train_loader = airbench.CifarLoader(
                    "cifar10", train=True, batch_size=250 if args.tiny else 1024,
                    aug={"flip": True, "translate": 2}, altflip=True, gpu=gpu,
                )  # fmt: skip
                test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000, gpu=gpu)
            if not args.tiny:  # warm-ups, not counted
                fast_run(args, 0, tmp / "warmup", epochs=1)
                if airbench is not None:
                    airbench_run(airbench, train_loader, test_loader, -1, args.device)
            for r in range(runs):
                ours.append(fast_run(args, r, tmp / "runs"))
                print(
                    f"run {r}: visionbench fast {ours[-1]['acc']:.2%} in {ours[-1]['seconds']:.2f} s",
                    flush=True,
                )
                if airbench is None:
                    continue
                if cuda:
                    theirs.append(airbench_run(airbench, train_loader, test_loader, r, args.device))
                else:
                    theirs.append(airbench_tiny_check(airbench, train_loader, test_loader))
                print(
                    f"run {r}: airbench94 {theirs[-1]['acc']:.2%} in {theirs[-1]['seconds']:.2f} s",
                    flush=True,
                )
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    head = f"CIFAR-10 (JPEG q75), {device_name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    if args.tiny:
        head += " -- TINY code-path check, not a measurement"
    lines = [head, "", *table(ours, theirs, device_name, cuda)]
    print("\n".join(lines))
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n".join(["### " + head, "", *lines[2:], "", ""]))


if __name__ == "__main__":
    main()
