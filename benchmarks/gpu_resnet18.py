"""ResNet-18 on CIFAR-10: visionbench against the typical PyTorch pipeline, seconds per epoch.

    python benchmarks/gpu_resnet18.py --epochs 10 --data-dir ../shared/data

Both sides read the same extracted ImageFolder tree (`cifar10-jpg/{train,test}/<class>/*.jpg`)
and train the same network (torchvision resnet18 with visionbench's small-image stem: 3x3
stride-1 conv, no max-pool) for the same epochs with the same recipe: SGD momentum 0.9
Nesterov, lr 0.1 one-cycle, weight decay 5e-4 (not on biases and norms), batch 256, crop 4 +
flip, label smoothing 0.1.
- **reference**: `ImageFolder` + PIL transforms (RandomCrop(32, 4, reflect), flip, ToTensor,
  Normalize) + `DataLoader(num_workers=8, pin_memory=True)`, fp32, contiguous NCHW.
- **visionbench**: `visionbench train --data folder:<tree>` (uint8 tensors on the device, bf16
  autocast, channels-last); its array cache is built before timing.
Seconds per epoch are the mean over epochs 2.. (epoch 1 carries cuDNN autotuning on both sides);
test accuracy after the last epoch, both without TTA.

`--smoke` checks the logic on a CPU: 30 images per class (one batch), 1 epoch, 0 workers.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.engine.optim import create_optimizer, create_scheduler
from visionbench.models import create_model

RECIPE = [
    "model.name=resnet18",
    "optim.name=sgd",
    "optim.lr=0.1",
    "optim.weight_decay=5e-4",
    "sched.name=onecycle",
    "train.batch_size=256",
    "train.label_smoothing=0.1",
    "aug.crop_padding=4",
    "aug.flip=true",
    "data.val_fraction=0",
]


def extract(tar: Path, dest: Path, per_class: int | None) -> Path:
    """The tar's ImageFolder tree under dest; `per_class` keeps only that many files per class."""
    kept: dict[str, int] = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            if not m.isfile():
                continue
            folder = str(Path(m.name).parent)
            if per_class is not None and kept.get(folder, 0) >= per_class:
                continue
            kept[folder] = kept.get(folder, 0) + 1
            tf.extract(m, dest, filter="data")
    return dest / "cifar10-jpg"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reference(tree: Path, epochs: int, workers: int, device: torch.device) -> tuple[list[float], float]:
    """The typical pipeline, written out: returns (seconds per epoch, test accuracy)."""
    from torchvision import datasets, transforms

    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    tf_train = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    tf_test = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_set = datasets.ImageFolder(tree / "train", tf_train)
    test_set = datasets.ImageFolder(tree / "test", tf_test)
    kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    train_dl = torch.utils.data.DataLoader(train_set, batch_size=256, shuffle=True, drop_last=True, **kw)
    test_dl = torch.utils.data.DataLoader(test_set, batch_size=1024, **kw)
    cfg = resolve_config([], RECIPE)
    model = create_model("resnet18", num_classes=len(train_set.classes), small_stem=True).to(device)
    opt = create_optimizer(model, cfg.optim)
    sched = create_scheduler(opt, cfg.sched, len(train_dl), epochs)
    seconds = []
    for _ in range(epochs):
        model.train()
        sync()
        t0 = time.perf_counter()
        for x, y in train_dl:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        sync()
        seconds.append(time.perf_counter() - t0)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_dl:
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return seconds, correct / len(test_set)


def ours(tree: Path, epochs: int, device: str, runs_dir: Path) -> tuple[list[float], float]:
    cfg = resolve_config(
        [], RECIPE + [f"data.name=folder:{tree}", f"train.epochs={epochs}", f"train.device={device}"]
    )
    from visionbench.data import load_dataset

    load_dataset(cfg.data.name)  # build the array cache outside the timing
    run = train(cfg, runs_dir, quiet=True)
    return [r["seconds"] for r in run.metrics()], run.read_json("summary.json")["test_acc"]


def per_epoch(seconds: list[float]) -> float:
    timed = seconds[1:] or seconds
    return sum(timed) / len(timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="CPU logic check: 30 images per class, 1 epoch")
    args = ap.parse_args()
    epochs, workers = (1, 0) if args.smoke else (args.epochs, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = extract(Path(args.data_dir) / "cifar10-jpg.tar.gz", tmp, 30 if args.smoke else None)
        ref_s, ref_acc = reference(tree, epochs, workers, torch.device(args.device))
        vb_s, vb_acc = ours(tree, epochs, args.device, tmp / "runs")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device: {device}, torch {torch.__version__}, {epochs} epochs")
    print(
        f"reference (ImageFolder + PIL + DataLoader({workers}), fp32): {per_epoch(ref_s):.2f} s/epoch, test {ref_acc:.2%}"
    )
    print(
        f"visionbench (tensor loader, bf16 on CUDA, channels-last): {per_epoch(vb_s):.2f} s/epoch, test {vb_acc:.2%}"
    )
    speedup = per_epoch(ref_s) / per_epoch(vb_s)
    gap = abs(ref_acc - vb_acc)
    print(
        f"speed-up {speedup:.2f}x; accuracy gap {gap:.2%} ({'within' if gap <= 0.005 else 'outside'} 0.5 pt)"
    )


if __name__ == "__main__":
    main()
