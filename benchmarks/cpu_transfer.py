"""Transfer without internet, on the CPU: does a backbone trained on some CIFAR-10 classes
help on the others?

1. pretrain: ResNet-18 (small stem) on CIFAR-10 classes 0-4 (airplane, automobile, bird,
   cat, deer), PRETRAIN_PER_CLASS training images per class.
2. transfer: fine-tune those weights on classes 5-9 (dog, frog, horse, ship, truck) with only
   FINETUNE_PER_CLASS training images per class -- a new head; the head alone for
   HEAD_EPOCHS epochs, then every layer with the backbone's learning rate x BACKBONE_LR_MULT.
3. scratch: the same network, data, epochs, optimizer and schedule from random weights.

Both fine-tuning runs are tested on all 5,000 test images of classes 5-9. Runs are named, so
a finished step is reused when the script is run again.

    python benchmarks/cpu_transfer.py [--data-dir ../shared/data] [--runs-dir runs/transfer] [--only pretrain]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.runs import Run

PRETRAIN_PER_CLASS, PRETRAIN_EPOCHS = 300, 2
FINETUNE_PER_CLASS, FINETUNE_EPOCHS, HEAD_EPOCHS, BACKBONE_LR_MULT = 30, 8, 3, 0.1
TEST_PER_CLASS = 200  # 1,000 test images per 5-class task: +-1.5% standard error, a fifth of the CPU time

COMMON = [
    "data.name=cifar10",
    "model.name=resnet18",
    "model.small_stem=true",
    "train.batch_size=64",
    "train.device=cpu",
    "aug.flip=true",
    "aug.crop_padding=4",
    "optim.lr=0.05",
    "train.label_smoothing=0.1",
    f"data.test_per_class={TEST_PER_CLASS}",
]
PRETRAIN = [
    "data.classes=[0, 1, 2, 3, 4]",
    f"data.per_class={PRETRAIN_PER_CLASS}",
    f"train.epochs={PRETRAIN_EPOCHS}",
]
FINETUNE = [
    "data.classes=[5, 6, 7, 8, 9]",
    f"data.per_class={FINETUNE_PER_CLASS}",
    f"train.epochs={FINETUNE_EPOCHS}",
]
STAGES = f"finetune.stages=[{{epochs: {HEAD_EPOCHS}, freeze: head-only}}, {{freeze: none, backbone_lr_mult: {BACKBONE_LR_MULT}}}]"


def run(name: str, overrides: list[str], data_dir: str, runs_dir: str) -> dict:
    """Train the named run (reusing it when already finished); its summary."""
    path = Path(runs_dir) / name
    if (path / "summary.json").exists():
        print(f"{name}: finished earlier, reused")
    else:
        cfg = resolve_config(
            [], COMMON + overrides + [f"name={name}", f"data.dir={Path(data_dir).resolve()}"]
        )
        train(cfg, runs_dir, resume=name if path.exists() else None)
    return Run.open(name, Path(runs_dir)).read_json("summary.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--runs-dir", default="runs/transfer")
    ap.add_argument("--only", choices=["pretrain", "scratch"], help="run this step alone (in parallel)")
    args = ap.parse_args()
    if args.only == "scratch":
        run("scratch-c5-9", FINETUNE, args.data_dir, args.runs_dir)
        return
    pre = run("pretrain-c0-4", PRETRAIN, args.data_dir, args.runs_dir)
    if args.only:
        return
    transfer = run(
        "transfer-c5-9",
        FINETUNE + ["model.weights=run:pretrain-c0-4", "model.reset_head=true", STAGES],
        args.data_dir,
        args.runs_dir,
    )
    scratch = run("scratch-c5-9", FINETUNE, args.data_dir, args.runs_dir)
    result = {k: v["test_acc"] for k, v in [("pretrain", pre), ("transfer", transfer), ("scratch", scratch)]}
    result["seconds"] = {
        k: v["train_seconds"] for k, v in [("pretrain", pre), ("transfer", transfer), ("scratch", scratch)]
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
