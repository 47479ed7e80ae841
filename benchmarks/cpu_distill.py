"""Distillation on CIFAR-10 (JPEG q75), on the CPU: a 3-model soft vote taught to one small
network, against the same network trained alone (the issue's bar: the distilled student beats it).

Three teachers of different shapes train with crop + flip (no label smoothing: a label-smoothed
teacher's soft targets carry less about which wrong classes look alike, Mueller et al. 2019,
"When does label smoothing help?"); `visionbench ensemble --vote soft --save vote` combines them
(each member calibrated by its fitted temperature, as `predict` uses it). Then, for each seed,
the student - small_cnn width 6 - trains twice with the same recipe and seed: alone, and with
train.teacher=ensemble:vote. The students train without augmentation, so the vote's targets are
computed once per training image (the run says so) instead of three teachers every step.

Every run is a plain `visionbench train` subprocess, one thread each, two at a time (--jobs):
the alone and the distilled student of a seed train side by side, so their wall times are
comparable (the ratio is printed; an absolute time on a shared CPU says little). A run that
already finished in --runs-dir is reused: an interrupted benchmark continues where it stopped.

    python benchmarks/cpu_distill.py [--quick] [--data-dir ../shared/data] [--runs-dir runs/cpu_distill]

Default size: 22,500 training images, the 10,000 test images, 3 seeds; about 15 min on 2 idle cores
(at most ~25); --quick: a smoke test of the same steps on 360 images, ~2 min.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# images per class (train before the 10% validation carve-out / test), epochs, seeds
SIZES = {
    # ~14 min on 2 idle cores by the step rates of one thread (w16 ~3,100, w6 ~4,200 img/s at
    # batch 128, forward + backward alone): 25 min leaves room for the loader and evaluations
    "default": {"per_class": 2500, "test_per_class": 1000, "teacher_epochs": 12, "student_epochs": 20},
    "quick": {"per_class": 40, "test_per_class": 20, "teacher_epochs": 2, "student_epochs": 2},
}
SEEDS = {"default": [0, 1, 2], "quick": [0, 1]}
TEACHERS = {
    "simple_cnn": ["--model", "simple_cnn", "--batch-size", "64", "--lr", "0.05"],
    "small_cnn_w12": ["--model", "small_cnn", "--lr", "0.1", "model.kwargs={width: 12}"],
    "small_cnn_w16": ["--model", "small_cnn", "--lr", "0.1", "model.kwargs={width: 16}"],
}
TEACHER_AUG = ["aug.crop_padding=4", "aug.flip=true"]
STUDENT = ["--model", "small_cnn", "--lr", "0.1", "model.kwargs={width: 6}"]
# Hinton et al.'s usual pair; the soft targets carry most of the loss on small data
DISTILL = ["train.distill_weight=0.7", "train.distill_temperature=4"]


def visionbench(*args: str) -> tuple[dict, float]:
    """The command's --json answer and its wall seconds; a failure ends the benchmark."""
    cmd = [sys.executable, "-m", "visionbench", *args, "--json"]
    print("$ visionbench " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def train_all(runs: dict[str, list[str]], common: list[str], runs_dir: Path, jobs: int) -> dict[str, float]:
    """Train each run not finished yet, `jobs` at a time; the wall seconds of those trained."""
    todo = {n: o for n, o in runs.items() if not (runs_dir / n / "summary.json").is_file()}
    train = lambda item: visionbench("train", *common, *item[1], "--name", item[0], "--quiet")[1]
    with ThreadPoolExecutor(jobs) as pool:  # each job waits on its own visionbench process
        return dict(zip(todo, pool.map(train, todo.items())))


def summary(runs_dir: Path, name: str) -> dict:
    return json.loads((runs_dir / name / "summary.json").read_text())


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} ± {sd:.2%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
    ap.add_argument("--runs-dir", type=Path, default=None, help="default: runs/cpu_distill[-quick]")
    ap.add_argument("--quick", action="store_true", help="a ~2 min smoke test of the same steps")
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once, one thread each")
    args = ap.parse_args()
    size = "quick" if args.quick else "default"
    s, seeds = SIZES[size], SEEDS[size]
    runs_dir = args.runs_dir or Path(f"runs/cpu_distill{'-quick' * args.quick}")
    common = [
        "--data", "cifar10", "--data-dir", str(args.data_dir), "--runs-dir", str(runs_dir),
        f"data.per_class={s['per_class']}", f"data.test_per_class={s['test_per_class']}",
        "train.threads=1", "train.device=cpu",
    ]  # fmt: skip
    t_start = time.perf_counter()
    # the first run decodes the images into the array cache; the rest read it
    first = dict(list(TEACHERS.items())[:1])
    teachers_common = [*common, "--epochs", str(s["teacher_epochs"]), *TEACHER_AUG]
    walls = train_all(first, teachers_common, runs_dir, 1)
    walls |= train_all(TEACHERS, teachers_common, runs_dir, args.jobs)
    if not (runs_dir / "vote" / "ensemble.json").is_file():
        visionbench("ensemble", *TEACHERS, "--vote", "soft", "--save", "vote", "--runs-dir", str(runs_dir))
    vote = summary(runs_dir, "vote")  # what `ensemble` measured when saving it
    students = {}
    for seed in seeds:  # the pair of a seed side by side: their wall times compare
        students[f"alone-{seed}"] = [*STUDENT, "--seed", str(seed)]
        students[f"distilled-{seed}"] = [
            *STUDENT,
            "--seed",
            str(seed),
            "train.teacher=ensemble:vote",
            *DISTILL,
        ]
    walls |= train_all(students, [*common, "--epochs", str(s["student_epochs"])], runs_dir, args.jobs)
    wall = time.perf_counter() - t_start
    report(runs_dir, vote, seeds, walls, wall, size, s)


def report(
    runs_dir: Path, vote: dict, seeds: list[int], walls: dict, wall: float, size: str, s: dict
) -> None:
    """The table (test top-1, mean ± std over seeds), the wall times, results.json."""
    import torch

    members = {n: summary(runs_dir, n) for n in TEACHERS}
    alone = [summary(runs_dir, f"alone-{seed}") for seed in seeds]
    taught = [summary(runs_dir, f"distilled-{seed}") for seed in seeds]
    print(
        f"\nCIFAR-10 (JPEG q75), {s['per_class'] * 10:,} train images (10% held out for validation) / "
        f"{s['test_per_class'] * 10:,} test, size '{size}'; CPU {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} cores), torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n"
    )
    print("| network | params | epochs | seeds | test top-1 |")
    print("| --- | --- | --- | --- | --- |")
    for name, m in members.items():
        print(f"| teacher {name} (crop + flip) | {m['params']:,} | {m['epochs']} | 1 | {m['test_acc']:.2%} |")
    print(f"| **soft vote** of the three (calibrated) | | | 1 | **{vote['top1']:.2%}** |")
    for label, rows in (("student alone", alone), ("student distilled from the vote", taught)):
        accs = [r["test_acc"] for r in rows]
        print(
            f"| {label} (small_cnn width 6) | {rows[0]['params']:,} | {rows[0]['epochs']} | {len(rows)} "
            f"| {mean_std(accs)} |"
        )
    gain = [t["test_acc"] - a["test_acc"] for a, t in zip(alone, taught)]
    verdict = "beats" if min(gain) > 0 else "does not beat (in every seed)"
    print(
        f"\ndistilled - alone, per seed: {', '.join(f'{g:+.2%}' for g in gain)}: the distilled student "
        f"{verdict} the same network trained alone"
    )
    pairs = [
        walls[f"distilled-{seed}"] / walls[f"alone-{seed}"] for seed in seeds if f"alone-{seed}" in walls
    ]
    if pairs:  # trained in this call, side by side
        print(
            f"student wall time, distilled / alone (median of {len(pairs)}): {statistics.median(pairs):.2f}x"
        )
    print(f"wall time of this call: {wall:.0f} s ({len(walls)} runs trained, the rest reused)")
    results = {"vote": vote, "teachers": members, "alone": alone, "distilled": taught, "walls": walls}
    (runs_dir / "results.json").write_text(json.dumps(results | {"wall": wall, "size": size}, indent=1))


if __name__ == "__main__":
    main()
