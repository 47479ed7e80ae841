"""visionbench's `fast` recipe against airbench94 on CIFAR-10, same GPU, same decoded images.

    pip install airbench==0.1.8
    python benchmarks/gpu_cifar10.py --runs 5 --data-dir ../shared/data

Both sides train on the 50,000 train images and are tested on the 10,000 test images of the
same decoded copy (`cifar10-jpg.tar.gz` through visionbench's cache): airbench's CifarLoader
reads them from `cifar10/{train,test}.pt` files this script writes in a scratch folder (its
train94 builds its test loader from the relative path `cifar10`, so the script runs it there).
Times are wall seconds around one call each, with the GPU synchronised before and after:
airbench's covers its training and its TTA evaluation; visionbench's covers `commands.train.train` end to
end (loader set-up, training, test pass, run record). airbench's warm-up run is not counted.

`--smoke` checks the script's logic on a CPU in seconds: the digits dataset, 1 epoch, 1 run,
airbench skipped where it or CUDA is missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.data import load_dataset


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_visionbench(args, seed: int, runs_dir: Path) -> tuple[float, float]:
    overrides = [f"seed={seed}", "data.val_fraction=0", f"train.device={args.device}"]
    if args.smoke:
        overrides += ["data.name=digits", "train.epochs=1", "model.name=small_cnn", "model.kwargs={width: 8}"]
    else:
        overrides += ["data.name=cifar10", f"data.dir={Path(args.data_dir).resolve()}"]
    cfg = resolve_config([], overrides + args.set, recipe="fast")
    sync()
    t0 = time.perf_counter()
    run = train(cfg, runs_dir, quiet=True)
    sync()
    return run.read_json("summary.json")["test_acc"], time.perf_counter() - t0


def write_airbench_files(data_dir: str, folder: Path) -> None:
    """airbench's CifarLoader reads {images: uint8 NHWC, labels, classes} from <path>/{train,test}.pt."""
    ds = load_dataset("cifar10", data_dir)
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        s = ds.splits[split]
        images = torch.from_numpy(s.images[:]).permute(0, 2, 3, 1).contiguous()
        torch.save(
            {"images": images, "labels": torch.from_numpy(s.labels[:]), "classes": ds.classes},
            folder / "cifar10" / f"{split}.pt",
        )


def run_airbench(folder: Path, runs: int) -> list[tuple[float, float]]:
    try:
        import airbench
    except ImportError:
        print("airbench is not installed: pip install airbench==0.1.8 (reference side skipped)")
        return []
    if not torch.cuda.is_available():
        print("airbench needs a CUDA GPU (reference side skipped)")
        return []
    cwd = os.getcwd()
    os.chdir(folder)  # train94 opens its test set as the relative path 'cifar10'
    try:
        loader = airbench.CifarLoader(
            "cifar10", train=True, batch_size=1024, aug=dict(flip=True, translate=2), altflip=True
        )
        airbench.train94(loader, run=-1, verbose=False)  # warm-up, not counted (as its README does)
        out = []
        for r in range(runs):
            sync()
            t0 = time.perf_counter()
            acc = airbench.train94(loader, run=r, verbose=False)
            sync()
            out.append((float(acc), time.perf_counter() - t0))
        return out
    finally:
        os.chdir(cwd)


def describe(rows: list[tuple[float, float]]) -> str:
    accs, secs = [a for a, _ in rows], [s for _, s in rows]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    return (
        f"{statistics.mean(accs):.2%} ± {sd(accs):.2%}  {statistics.mean(secs):.2f} s ± {sd(secs):.2f}"
        f"  (runs: {', '.join(f'{a:.2%}/{s:.1f}s' for a, s in rows)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="CPU logic check: digits, 1 epoch, 1 run")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of the fast recipe")
    args = ap.parse_args()
    runs = 1 if args.smoke else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = [run_visionbench(args, seed, tmp / "runs") for seed in range(runs)]
        theirs = []
        if not args.smoke:
            write_airbench_files(args.data_dir, tmp)
            theirs = run_airbench(tmp, runs)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {device}, torch {torch.__version__}")
    print(f"visionbench fast: {describe(ours)}")
    if theirs:
        print(f"airbench94:       {describe(theirs)}")
        ratio = statistics.mean(s for _, s in ours) / statistics.mean(s for _, s in theirs)
        print(f"time ratio visionbench / airbench94: {ratio:.2f}x")


if __name__ == "__main__":
    main()
