"""A photo folder with no settings: `visionbench train --data folder:PATH --model resnet18` and
nothing else, on the CPU, as a new user would try it.

The folder is made from the CIFAR-10 JPEG copy: PER_CLASS train and PER_CLASS val images of
CLASSES, each upscaled to a phone-photo size drawn from SIZES (landscape and portrait), saved
as JPEG (one as a palette PNG), in train/<class>/ and val/<class>/ - varied sizes and modes, as
real folders have. The script times the command from process start to exit and reports test
accuracy beside the majority class's share, and the lines the command printed about what it
chose.

    python benchmarks/cpu_photo_folder.py [--data-dir ../shared/data] [--out /tmp/photos]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from visionbench.data import load_dataset

CLASSES = ("airplane", "frog", "truck")
PER_CLASS = 70  # train and val each: 420 photos in all, as in the folder (~400)
SIZES = [(500, 375), (375, 500), (500, 333), (640, 480), (333, 500), (480, 640)]


def make_folder(data_dir: str | None, out: Path) -> Path:
    ds = load_dataset("cifar10", data_dir)
    rng = np.random.default_rng(0)
    for split, source in (("train", "train"), ("val", "test")):
        s = ds.splits[source]
        for name in CLASSES:
            c = ds.classes.index(name)
            idx = rng.permutation(np.flatnonzero(s.labels == c))[:PER_CLASS]
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(idx):
                w, h = SIZES[rng.integers(len(SIZES))]
                img = Image.fromarray(np.asarray(s.images[i]).transpose(1, 2, 0)).resize(
                    (w, h), Image.BICUBIC
                )
                if split == "train" and k == 0 and name == CLASSES[0]:
                    img.convert("P").save(folder / f"{k:04d}.png")  # one palette PNG
                else:
                    img.save(folder / f"{k:04d}.jpg", quality=90)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="photos-"))
    if not (out / "train").is_dir():
        make_folder(args.data_dir, out)
    runs = out.parent / f"{out.name}-runs"
    env = {**os.environ, "VISIONBENCH_CACHE": str(out.parent / f"{out.name}-cache")}
    cmd = [sys.executable, "-m", "visionbench", "train", "--data", f"folder:{out}", "--model", "resnet18",
           "--runs-dir", str(runs), "--json"]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode:
        sys.exit(res.stderr + res.stdout)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    run = Path(summary["run"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    meta = json.loads((run / "run.json").read_text())
    counts = meta["data_report"]["counts"]["test"]
    majority = max(counts) / sum(counts)
    print(f"command: {' '.join(cmd[1:])}")
    print("chosen:\n  " + "\n  ".join(meta["choices"]))
    print("train loss by epoch: " + " ".join(f"{r['train_loss']:.3f}" for r in rows))
    print("val acc by epoch:    " + " ".join(f"{r['val_acc']:.1%}" for r in rows))
    print(f"test accuracy {summary['test_acc']:.2%} on {sum(counts)} images; majority class {majority:.2%}")
    print(f"wall time {wall:.0f} s (process start to exit, cache build included)")


if __name__ == "__main__":
    main()
