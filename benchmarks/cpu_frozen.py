"""Frozen layers computed once, on the CPU: head-only training of a frozen MobileNet v3 at 224 px,
through the backbone every step vs on its output cached once (finetune.cache_features).

A pretrained-shape torchvision mobilenet_v3_large (random weights, BatchNorm statistics measured
on 256 training images: the cost is the shape's) is trained head-only for EPOCHS epochs on IMAGES CIFAR-10 (JPEG q75) training images (10% held out
for validation), resized on the device to 224 px. Three runs, in this order:

1. through: finetune.cache_features=off - the frozen backbone runs on every batch of every epoch.
2. cached: finetune.cache_features=on - its output computed once (any cached copy removed first).
3. again: cached, with another learning rate - a sweep over head settings reads the features back.

Timed per run: the training (from the call until the last epoch ends: data, model, features,
epochs, validation) and the test evaluation after it (through the whole model, or - ending in a
cached stage - the rest on the test images' cached features: computed by the cached run, read
back by the next). The bar:
>= 8x less training wall time, head weights of runs 1 and 2 equal within 1e-4.

    python benchmarks/cpu_frozen.py --data-dir ../shared/data [--images 5000] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

import visionbench.commands.train as train_module
from visionbench.config import resolve_config
from visionbench.data.prepare import prepare_data
from visionbench.engine.features import FrozenFeatures
from visionbench.models.build import build_model
from visionbench.runs import Run

MODEL, INPUT_SIZE, HEAD = "mobilenet_v3_large", 224, "classifier.3"
CALIBRATION = 256  # training images the backbone's BatchNorm statistics are measured on
TARGET_RATIO, TARGET_DIFF = 8.0, 1e-4


def settings(args) -> list[str]:
    return [
        "data.name=cifar10",
        f"data.dir={Path(args.data_dir).resolve()}",
        f"data.per_class={args.images // 10}",
        f"data.test_per_class={args.test_images // 10}",
        f"model.name={MODEL}",
        f"model.input_size={INPUT_SIZE}",
        "finetune.freeze=head-only",
        f"train.epochs={args.epochs}",
        "optim.lr=0.05",
        "train.device=cpu",
        "train.amp=false",  # fp32 on every CPU: the 1e-4 bar is fp32's
        *([f"train.threads={args.threads}"] if args.threads else []),
    ]


def starting_weights(args, folder: Path) -> Path:
    """Random weights whose BatchNorm statistics are measured on CALIBRATION training images
    (train-mode forward passes, untimed): with the initial statistics a random MobileNet's
    features vanish (~1e-10) and the head learns nothing. Also deletes this benchmark's cached
    features, so that the cached run computes them."""
    cfg = resolve_config([], settings(args))
    data = prepare_data(cfg, torch.device("cpu"))  # the data decoded into the array cache, untimed
    torch.manual_seed(0)
    model = build_model(cfg, data.dataset, torch.device("cpu"))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # the plain average over the batches
    model.train()
    with torch.no_grad():
        x, _ = next(data.loader("train", data.keep[:CALIBRATION]).epoch(0))
        for batch in x.split(64):
            model(batch)
    path = folder / "calibrated.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    for meta in (Path(data.dataset.cache) / "features").glob("*/meta.json"):
        key = json.loads(meta.read_text()).get("key", {})
        if key.get("data") == data.dataset.fingerprint and key.get("model") == MODEL:
            shutil.rmtree(meta.parent)
    return path


def timed_run(name: str, overrides: list[str], args, runs_dir: Path) -> dict:
    """Train one run; seconds until its last epoch ended and for the test evaluation after."""
    marks = {}
    test = FrozenFeatures.test  # called once the last epoch has ended, to choose the test pass

    def timed_test(*a, **kw):
        marks["trained"] = time.perf_counter()
        return test(*a, **kw)

    FrozenFeatures.test = timed_test
    try:
        t0 = time.perf_counter()
        run = train_module.train(resolve_config([], settings(args) + overrides + [f"name={name}"]), runs_dir)
        end = time.perf_counter()
    finally:
        FrozenFeatures.test = test
    summary = run.read_json("summary.json")
    return {
        "name": name,
        "run": run,
        "train_s": marks["trained"] - t0,
        "test_s": end - marks["trained"],
        "val_acc": run.metrics()[-1].get("val_acc"),
        "test_acc": summary["test_acc"],
    }


def max_diff(a: Run, b: Run, prefix: str) -> float:
    """The largest absolute difference between the two runs' last weights named `prefix`..."""
    wa, wb = a.load_weights("last"), b.load_weights("last")
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa if k.startswith(prefix))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--images", type=int, default=5000, help="CIFAR-10 training images (10%% validate)")
    ap.add_argument("--test-images", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--runs-dir", default=None, help="default: a temporary folder, removed after")
    args = ap.parse_args()
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="cpu_frozen-"))
    start = f"model.weights={starting_weights(args, runs_dir)}"
    rows = [
        timed_run("through", [start, "finetune.cache_features=off"], args, runs_dir),
        timed_run("cached", [start, "finetune.cache_features=on"], args, runs_dir),
        timed_run("again", [start, "finetune.cache_features=on", "optim.lr=0.02"], args, runs_dir),
    ]
    through, cached = rows[0], rows[1]
    ratio = through["train_s"] / cached["train_s"]
    head_diff = max_diff(through["run"], cached["run"], HEAD)
    print(f"\n{MODEL} at {INPUT_SIZE} px, head-only, {args.epochs} epochs, {args.images:,} CIFAR-10 images")
    print("| run | frozen layers | training s | test eval s | val acc | test acc |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    how = {"through": "every step", "cached": "computed once", "again": "read back (lr 0.02)"}
    for r in rows:
        val = f"{r['val_acc']:.2%}" if r["val_acc"] is not None else "-"
        print(
            f"| {r['name']} | {how[r['name']]} | {r['train_s']:.1f} | {r['test_s']:.1f} | {val} "
            f"| {r['test_acc']:.2%} |"
        )
    ok = ratio >= TARGET_RATIO and head_diff <= TARGET_DIFF
    print(
        f"frozen features: {ratio:.1f}x less training wall time ({through['train_s']:.1f} s -> "
        f"{cached['train_s']:.1f} s), head weights within {head_diff:.1e} "
        f"(bar >= {TARGET_RATIO:g}x, <= {TARGET_DIFF:g}): {'met' if ok else 'NOT met'}"
    )
    if not args.runs_dir:
        shutil.rmtree(runs_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
