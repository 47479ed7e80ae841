"""`train.compile` on the CPU: training images/s with and without torch.compile, and the
compile's cost, same run otherwise.

    python benchmarks/cpu_compile.py [--runs 3] [--data-dir ../shared/data]

Each run is a fresh `visionbench train` process: simple_cnn on an MNIST subset (1,000 train
images per class, 10% held out, 100 test images per class), batch 128, one-cycle SGD, one
thread, 4 epochs; eager and compiled runs interleaved, same seed. Compiled runs start with an
empty Inductor cache (TORCHINDUCTOR_CACHE_DIR), so their first epoch pays the whole compile.
Steady img/s is the median over epochs 2..; the compile's cost is epoch 1's seconds minus the
seconds epoch 1 would take at the steady rate. Medians over the runs are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = [
    "data.name=mnist",
    "data.per_class=1000",
    "data.test_per_class=100",
    "model.name=simple_cnn",
    "train.epochs=4",
    "train.batch_size=128",
    "optim.lr=0.05",
    "train.threads=1",
    "train.device=cpu",
]


def one_run(data_dir: Path, compile: bool, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor"}
        cmd = [sys.executable, "-m", "visionbench", "train", "--json", "--data-dir", str(data_dir)]
        cmd += [
            "--runs-dir",
            f"{tmp}/runs",
            *SETTINGS,
            f"seed={seed}",
            f"train.compile={str(compile).lower()}",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"visionbench failed:\n{proc.stderr[-3000:]}")
        (run_dir,) = Path(tmp, "runs").iterdir()
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    steady = statistics.median(r["images_per_s"] for r in rows[1:])
    first = rows[0]
    return {
        "steady_img_s": steady,
        "first_epoch_s": first["seconds"],
        "overhead_s": first["seconds"] - first["seconds"] * first["images_per_s"] / steady,
        "wall_s": wall,
        "test_acc": summary["test_acc"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    results: dict[str, list[dict]] = {"eager": [], "compiled": []}
    for i in range(args.runs):
        for name in results:
            results[name].append(one_run(args.data_dir, name == "compiled", seed=i))
            print(f"run {i + 1} {name}: {results[name][-1]}", flush=True)

    import torch

    print(
        f"\nsimple_cnn, MNIST subset, CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
        f"1 thread, torch {torch.__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, "
        f"{args.runs} runs each\n"
    )
    print("| | steady img/s (median) | runs | epoch 1 s | compile cost s | wall s | test acc |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    med = {}
    for name, rows in results.items():
        col = {k: [r[k] for r in rows] for k in rows[0]}
        med[name] = statistics.median(col["steady_img_s"])
        print(
            f"| {name} | {med[name]:,.0f} | {', '.join(f'{v:,.0f}' for v in col['steady_img_s'])} "
            f"| {statistics.median(col['first_epoch_s']):.1f} | {statistics.median(col['overhead_s']):.1f} "
            f"| {statistics.median(col['wall_s']):.1f} | {', '.join(f'{v:.2%}' for v in col['test_acc'])} |"
        )
    print(f"\ncompiled / eager steady throughput: {med['compiled'] / med['eager']:.2f}x")


if __name__ == "__main__":
    main()
