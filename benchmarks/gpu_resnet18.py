"""ResNet-18 on CIFAR-10: visionbench against the typical PyTorch pipeline, seconds per epoch,
at equal precision: the loader's gain and the precision's gain reported apart.

    python benchmarks/gpu_resnet18.py --epochs 5 --data-dir ../shared/data
    python benchmarks/gpu_resnet18.py --tiny --device cpu      # the code path on a CPU in < 1 min

Both sides read the same extracted ImageFolder tree (`cifar10-jpg/{train,test}/<class>/*.jpg`)
and train the same network (torchvision resnet18 with visionbench's small-image stem: 3x3
stride-1 conv, no max-pool) for the same epochs with the same recipe: SGD momentum 0.9
Nesterov, lr 0.1 one-cycle, weight decay 5e-4 (not on biases and norms), batch 256, crop 4 +
flip, label smoothing 0.1.
- **reference**: `ImageFolder` + PIL transforms (RandomCrop(32, 4, reflect), flip, ToTensor,
  Normalize) + `DataLoader(num_workers=8, pin_memory=True)`.
- **visionbench**: `visionbench train --data folder:<tree>` (uint8 tensors on the device,
  batched augmentation there); its array cache is built before timing.
- **precision**, the same for both sides in each pair: `bf16` is bf16 autocast with the model
  and batches channels-last (visionbench's default on CUDA); `fp32` is float32 (cuDNN's TF32
  convolutions, PyTorch's default, on both) in contiguous NCHW. An earlier version of this
  script set the reference at fp32 against visionbench at bf16, which credited the loader with
  the precision's gain. Both sides run under the same backend flags (visionbench's
  `seed_everything`: deterministic kernels, no cuDNN autotuner, as `train.deterministic`).
Seconds per epoch are the mean over epochs 2.. (epoch 1 carries start-up costs on both sides);
test accuracy after the last epoch, both without TTA.
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
from visionbench.data import load_dataset
from visionbench.engine.device import amp_dtype, seed_everything
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


def settings(precision: str, tiny: bool) -> list[str]:
    """The shared recipe at `precision`; --tiny's 20 images take batches of 8 (256 would drop them all)."""
    bf16 = str(precision == "bf16").lower()
    return (
        RECIPE
        + [f"train.amp={bf16}", f"train.channels_last={bf16}"]
        + (["train.batch_size=8"] if tiny else [])
    )


def reference(
    tree: Path, epochs: int, workers: int, device: torch.device, overrides: list[str]
) -> tuple[list[float], float]:
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
    cfg = resolve_config([], overrides)
    batch = cfg.train.batch_size
    train_dl = torch.utils.data.DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True, **kw)
    test_dl = torch.utils.data.DataLoader(test_set, batch_size=1024, **kw)
    seed_everything(cfg.seed, device, cfg.train.deterministic)  # visionbench's backend flags, for both
    amp = amp_dtype(cfg.train.amp, device)  # bf16 on CUDA, as visionbench's loop; never on the CPU
    layout = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = create_model("resnet18", num_classes=len(train_set.classes), small_stem=True)
    model = model.to(device, memory_format=layout)
    opt = create_optimizer(model, cfg.optim)
    sched = create_scheduler(opt, cfg.sched, len(train_dl), epochs)
    seconds = []
    for _ in range(epochs):
        model.train()
        sync()
        t0 = time.perf_counter()
        for x, y in train_dl:
            x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        sync()
        seconds.append(time.perf_counter() - t0)
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        for x, y in test_dl:
            x = x.to(device).contiguous(memory_format=layout)
            correct += (model(x).argmax(1).cpu() == y).sum().item()
    return seconds, correct / len(test_set)


def ours(
    tree: Path, epochs: int, device: str, runs_dir: Path, overrides: list[str]
) -> tuple[list[float], float]:
    cfg = resolve_config(
        [], overrides + [f"data.name=folder:{tree}", f"train.epochs={epochs}", f"train.device={device}"]
    )
    load_dataset(cfg.data.name)  # build the array cache outside the timing
    run = train(cfg, runs_dir, quiet=True)
    return [r["seconds"] for r in run.metrics()], run.read_json("summary.json")["test_acc"]


def per_epoch(seconds: list[float]) -> float:
    timed = seconds[1:] or seconds
    return sum(timed) / len(timed)


def report(rows: dict, epochs: int, workers: int, device_name: str) -> list[str]:
    """RESULTS.md rows: each pipeline at each precision, then the two effects apart."""
    lines = [
        f"| pipeline | precision | s/epoch ({f'mean of epochs 2..{epochs}' if epochs > 1 else 'one epoch'}) | test acc |",
        "| --- | --- | --- | --- |",
    ]
    for (side, precision), (s, acc) in rows.items():
        name = f"reference (ImageFolder + PIL + DataLoader({workers}))" if side == "ref" else "visionbench"
        lines.append(f"| {name} | {precision} | {per_epoch(s):.2f} | {acc:.2%} |")
    t = {k: per_epoch(s) for k, (s, _) in rows.items()}
    lines.append("")
    for precision in ("fp32", "bf16"):
        if ("ref", precision) in t:
            gap = abs(rows[("ref", precision)][1] - rows[("vb", precision)][1])
            lines.append(
                f"loader gain at {precision} (reference / visionbench): {t[('ref', precision)] / t[('vb', precision)]:.2f}x,"
                f" accuracy gap {gap:.2%}"
            )
    if len({p for _, p in t}) == 2:
        for side, name in (("vb", "visionbench"), ("ref", "reference")):
            lines.append(
                f"precision gain, {name} (fp32 / bf16): {t[(side, 'fp32')] / t[(side, 'bf16')]:.2f}x"
            )
        lines.append(
            f"both together (reference fp32 / visionbench bf16): {t[('ref', 'fp32')] / t[('vb', 'bf16')]:.2f}x"
        )
    lines.append(f"Device: {device_name}.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["bf16", "fp32", "both"], default="both")
    ap.add_argument(
        "--tiny", action="store_true", help="code-path check: 2 images per class, 1 epoch, 0 workers"
    )
    ap.add_argument("--results", type=Path, help="append the RESULTS.md rows to this file")
    args = ap.parse_args()
    epochs, workers = (1, 0) if args.tiny else (args.epochs, args.workers)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = extract(Path(args.data_dir) / "cifar10-jpg.tar.gz", tmp, 2 if args.tiny else None)
        for precision in precisions:  # the pair at one precision back to back
            rows[("ref", precision)] = reference(
                tree, epochs, workers, torch.device(args.device), settings(precision, args.tiny)
            )
            print(f"reference {precision}: {per_epoch(rows[('ref', precision)][0]):.2f} s/epoch", flush=True)
            rows[("vb", precision)] = ours(
                tree, epochs, args.device, tmp / "runs", settings(precision, args.tiny)
            )
            print(f"visionbench {precision}: {per_epoch(rows[('vb', precision)][0]):.2f} s/epoch", flush=True)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    head = (
        f"ResNet-18, CIFAR-10 (JPEG q75), {device_name}, torch {torch.__version__}, "
        f"{epochs} epoch{'s' if epochs > 1 else ''}, {time.strftime('%Y-%m-%d')}"
    )
    if args.tiny:
        head += " -- TINY code-path check, not a measurement"
    lines = report(rows, epochs, workers, device_name)
    print("\n".join([head, "", *lines]))
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n".join(["### " + head, "", *lines, "", ""]))


if __name__ == "__main__":
    main()
