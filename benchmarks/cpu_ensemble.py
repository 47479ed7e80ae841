"""Write-up 004's ensemble on CIFAR-10 (JPEG q75), on the CPU: three different models, then a hard
vote (majority; a three-way split goes to the tie-break model) and a soft vote.

Each member is a plain `visionbench train` run; the ensembles are `visionbench ensemble` over
them. The tie-break model is the member with the best validation accuracy (as write-up 004 chose
its strongest model), picked before any test number is read. A member whose run already
finished in --runs-dir is reused, so an interrupted benchmark continues where it stopped.

The members train side by side (--jobs), one thread each: on a CPU shared with other work,
one-thread processes lose far less to waiting on each other's threads than one two-thread
process does.

    python benchmarks/cpu_ensemble.py [--data-dir ../shared/data] [--runs-dir runs/cpu_ensemble]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COMMON = [
    "--data",
    "cifar10",
    "aug.crop_padding=4",
    "aug.flip=true",
    "train.label_smoothing=0.1",
    "train.threads=1",
]
# three architectures/sizes that each train in minutes on a CPU core
MEMBERS = {
    "simple_cnn": ["--model", "simple_cnn", "--epochs", "6", "--batch-size", "64", "--lr", "0.05"],
    "small_cnn_w8": ["--model", "small_cnn", "--epochs", "6", "--lr", "0.1", "model.kwargs={width: 8}"],
    "small_cnn_w12": ["--model", "small_cnn", "--epochs", "5", "--lr", "0.1", "model.kwargs={width: 12}"],
}


def visionbench(*args: str) -> dict:
    cmd = [sys.executable, "-m", "visionbench", *args, "--json"]
    print("$ visionbench " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/cpu_ensemble"))
    ap.add_argument("--jobs", type=int, default=3, help="members trained at once")
    args = ap.parse_args()
    where = ["--runs-dir", str(args.runs_dir)]
    todo = {n: o for n, o in MEMBERS.items() if not (args.runs_dir / n / "summary.json").is_file()}
    with ThreadPoolExecutor(args.jobs) as pool:  # each job waits on its own visionbench process
        list(
            pool.map(
                lambda item: visionbench(
                    "train",
                    *COMMON,
                    *item[1],
                    "--data-dir",
                    str(args.data_dir),
                    "--name",
                    item[0],
                    "--quiet",
                    *where,
                ),
                todo.items(),
            )
        )
    summaries = {n: json.loads((args.runs_dir / n / "summary.json").read_text()) for n in MEMBERS}
    tie = max(summaries, key=lambda n: summaries[n]["best_val_acc"])
    votes = {
        v: visionbench("ensemble", *MEMBERS, "--vote", v, "--tie-break", tie, *where)
        for v in ("hard", "soft")
    }

    import torch

    print(
        f"\nCIFAR-10 (JPEG q75), CPU ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}; tie-break: {tie} (best val acc)\n"
    )
    print("| model | params | epochs | val acc | test acc | train s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, s in summaries.items():
        print(
            f"| {name} | {s['params']:,} | {s['epochs']} | {s['best_val_acc']:.2%} | {s['test_acc']:.2%} "
            f"| {s['train_seconds']:.0f} |"
        )
    for v, rep in votes.items():
        print(f"| **{v} vote** of the three | | | | **{rep['top1']:.2%}** | |")
    names = list(MEMBERS)
    agree = votes["hard"]["agreement"]
    pairs = ", ".join(f"{names[i]}/{names[j]} {agree[i][j]:.1%}" for i in range(3) for j in range(i + 1, 3))
    print(f"\npairwise agreement on test: {pairs}")
    (args.runs_dir / "results.json").write_text(json.dumps({"members": summaries, "votes": votes}, indent=1))


if __name__ == "__main__":
    main()
