"""bf16 autocast against fp32 on this CPU: the same runs, seed for seed, test accuracy and speed.

`train.amp` autocasts to bf16 on CPUs with native bf16 (AVX512-BF16 or AMX) and never elsewhere;
VISIONBENCH_CPU_BF16=1 forces the autocast path so the two can be compared on any CPU (where
bf16 is emulated, slowly: the speed column then says so).

    python benchmarks/cpu_bf16.py [--seeds 0 1 2] [--set data.name=mnist data.per_class=500 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

DEFAULT = ["data.name=digits", "model.name=small_cnn", "model.input_size=16", "train.epochs=5"]


def runs(overrides: list[str], seeds: list[int], bf16: bool) -> list[dict]:
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    os.environ["VISIONBENCH_CPU_BF16"] = "1" if bf16 else "0"
    out = []
    for seed in seeds:
        run = train(resolve_config([], overrides + [f"seed={seed}"]), quiet=True)
        rows = run.metrics()
        out.append(
            {
                "acc": run.read_json("summary.json")["test_acc"],
                "img_s": statistics.median(r["images_per_s"] for r in rows),
                "autocast": run.read_json("environment.json")["autocast"],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=DEFAULT, help="the runs' key=value settings")
    args = ap.parse_args()
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    print(f"native bf16 on this CPU: {native}; torch {torch.__version__}; runs: {' '.join(args.set)}")
    print("| precision | test acc per seed | mean | median train img/s |")
    print("|---|---|---|---|")
    for bf16 in (False, True):
        rs = runs(args.set, args.seeds, bf16)
        accs = [r["acc"] for r in rs]
        print(
            f"| {rs[0]['autocast'] or 'float32'} | {', '.join(f'{a:.2%}' for a in accs)} | "
            f"{statistics.mean(accs):.2%} | {statistics.median(r['img_s'] for r in rs):,.0f} |"
        )


if __name__ == "__main__":
    main()
