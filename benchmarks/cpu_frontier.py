"""CIFAR-10 on the CPU: the accuracy-time frontier of the `fast` recipe, measured.

Each variant below is the `fast` recipe (v2) with a few config overrides. Each variant x seed
trains as its own fresh process (`one_run` of cpu_cifar10.py: the run, its images/s and MFU),
timed from the process's start to its exit. Per variant the script prints, and writes as JSON
and as a Markdown table ready for RESULTS.md:

- PFLOP of the run: forward + backward FLOPs of one training image at the size it is trained
  at (torch.utils.flop_counter, `train_flops_per_image`) x images trained (the last partial
  batch of each epoch is dropped: 48 x 1024 = 49,152 an epoch at batch 1024), + forward FLOPs x
  test images x TTA views, + the whitening's data pass (the 2x2-patch covariance of 5,000
  training images: ~1.4 GFLOP, i.e. 0.000001 PFLOP - counted, but never visible). Two columns:
  `plan` for the full run (50,000 training and 10,000 test images, the variant's epochs), and
  `ran` for what the processes actually trained and tested (the same in a full run; with
  `--quick`, the tiny slice). BatchNorm, GELU, pooling and the optimizer are not FLOPs here.
- minutes from process start to exit (median over seeds; it includes the ~1 s matmul peak
  measured for the MFU), median train images/s, MFU, test top-1 mean +- std over the seeds.

Variants (`--variants a,b,...`; default all). The levers the product supports today: widths
(`model.kwargs`), epochs, `train.tta`, batch size, `model.input_size` (every batch, train and
test, resized on the device for the whole run), `train.lookahead`. Epoch variants keep the
recipe's warmup at 23% of the run. The batch-512 variant follows the recipe's lr rule (its lr
is per 1024 examples of the mean loss: lr = 1.5 x batch / 1024; weight decay is per unit lr,
so unchanged).
Progressive resizing (`train.progressive`: the early epochs at a lower side, growing to 32 px)
is counted epoch by epoch at the side each epoch trains at.

    python benchmarks/cpu_frontier.py --data-dir ../shared/data [--seeds 0 1] [--variants v2,w48]
        [--json frontier.json] [--markdown frontier.md] [--quick]

`--table-only`: train nothing; the table of the runs already in --json (the seeds each has).
`--quick`: each variant on a tiny slice (50 training images a class, 20 test images a class,
1 epoch; one seed unless --seeds is given) to check the code paths in a few minutes; its `plan`
column is still the full run's. Rows already in the --json file (same --quick) are kept and not
trained again, so a long run that stops can be continued. Last line: the variants that reach the
bar (>= 90.5% mean over >= 2 seeds, <= 0.15 PFLOP), cheapest first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cpu_cifar10 import ROOT, epoch_flops, fast_config, flops_per_image, one_run, timed_child

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
BAR_ACC, BAR_PFLOP = 0.905, 0.15


def widths(*w: int) -> str:
    return f"model.kwargs={{widths: [{', '.join(map(str, w))}]}}"


def epochs(n: int) -> list[str]:
    """n epochs, the warmup kept at the recipe's 23% of the run (2.3 of 10)."""
    return [f"train.epochs={n}", f"sched.warmup_epochs={0.23 * n:g}"]


def progressive(scale: float, **keys: float) -> list[str]:
    """train.progressive: the early epochs at `scale` x 32 px (hold 50%, finetune 20% unless given)."""
    return [f"train.progressive.scale={scale}", *(f"train.progressive.{k}={v}" for k, v in keys.items())]


# name -> (what changes, overrides of the fast recipe v2)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "v2": ("fast v2: widths 64/256/256, 10 epochs, batch 1024, flip-translate TTA (6 views)", []),
    "w32": ("widths 32/128/128", [widths(32, 128, 128)]),
    "w48": ("widths 48/192/192", [widths(48, 192, 192)]),
    "w64-192": ("widths 64/192/192", [widths(64, 192, 192)]),
    "e8": ("8 epochs", epochs(8)),
    "e6": ("6 epochs", epochs(6)),
    "tta-flip": ("TTA flip (2 views)", ["train.tta=flip"]),
    "tta-none": ("no TTA (1 view)", ["train.tta=none"]),
    "b512": ("batch 512, lr 0.75", ["train.batch_size=512", "optim.lr=0.75"]),
    "res28": ("28 px (model.input_size=28)", ["model.input_size=28"]),
    "res24": ("24 px (model.input_size=24)", ["model.input_size=24"]),
    "no-lookahead": ("no Lookahead", ["train.lookahead=0"]),
    # candidates for a v3 at <= 0.15 PFLOP (plan)
    "w48-e6": ("widths 48/192/192, 6 epochs", [widths(48, 192, 192), *epochs(6)]),
    "w48-e7-flip": ("widths 48/192/192, 7 epochs, TTA flip", [widths(48, 192, 192), *epochs(7), "train.tta=flip"]),
    "w48-160-e8": ("widths 48/160/160, 8 epochs", [widths(48, 160, 160), *epochs(8)]),
    "w64-192-e6-flip": ("widths 64/192/192, 6 epochs, TTA flip", [widths(64, 192, 192), *epochs(6), "train.tta=flip"]),
    "e4-flip": ("4 epochs, TTA flip", [*epochs(4), "train.tta=flip"]),
    "w48-e7-flip-b512": ("widths 48/192/192, 7 epochs, TTA flip, batch 512, lr 0.75", [widths(48, 192, 192), *epochs(7), "train.tta=flip", "train.batch_size=512", "optim.lr=0.75"]),
    # progressive resizing (train.progressive): the early epochs at a lower side
    "p50-e8": ("8 epochs, progressive 16 px -> 32 (16 x5, 24, 28, 32)", [*epochs(8), *progressive(0.5)]),
    "p50-h6-flip": ("progressive 16 px -> 32, held 60% (16 x7, 24, 32 x2), TTA flip", [*progressive(0.5, hold=0.6), "train.tta=flip"]),
    "p75-e6": ("6 epochs, progressive 24 px -> 32 (24 x4, 28, 32)", [*epochs(6), *progressive(0.75)]),
    "w64-192-p50-e12": ("widths 64/192/192, 12 epochs, progressive 16 px -> 32", [widths(64, 192, 192), *epochs(12), *progressive(0.5)]),
    "w48-p50-e14": ("widths 48/192/192, 14 epochs, progressive 16 px -> 32", [widths(48, 192, 192), *epochs(14), *progressive(0.5)]),
    "w48-p50-e16": ("widths 48/192/192, 16 epochs, progressive 16 px -> 32", [widths(48, 192, 192), *epochs(16), *progressive(0.5)]),
    "w48-p50-e16-h6": ("widths 48/192/192, 16 epochs, progressive 16 px -> 32, held 60%", [widths(48, 192, 192), *epochs(16), *progressive(0.5, hold=0.6)]),
    "w48-160-p50-e18": ("widths 48/160/160, 18 epochs, progressive 16 px -> 32", [widths(48, 160, 160), *epochs(18), *progressive(0.5)]),
    "w32-p50-e24": ("widths 32/128/128, 24 epochs, progressive 16 px -> 32", [widths(32, 128, 128), *epochs(24), *progressive(0.5)]),
}  # fmt: skip

# the tiny slice of --quick, after the variant's own overrides (its epochs and test set too)
QUICK = ["data.per_class=50", "data.test_per_class=20", *epochs(1)]


def variant_config(name: str, data_dir: str, quick: bool, seed: int = 0):
    return fast_config(seed, data_dir, [*VARIANTS[name][1], *(QUICK if quick else [])], name)


def images_trained(n: int, batch: int, epochs: int) -> int:
    """Training drops each epoch's last partial batch (data/loader.py), unless it is the only one."""
    return epochs * (n // batch * batch if n >= batch else n)


def whitening_flops(cfg, n_train: int) -> float:
    """fastnet's data pass: the second moment of every 2x2 patch (12 values) of up to 5,000
    training images at the size the network sees (models/build.py, fastnet.init_from_data)."""
    from visionbench.models.build import WHITEN_IMAGES
    from visionbench.models.fastnet import WHITEN_SIZE

    if cfg.model.name != "fastnet":
        return 0.0
    side, dim = (cfg.model.input_size or 32) - WHITEN_SIZE + 1, 3 * WHITEN_SIZE**2
    return min(WHITEN_IMAGES, n_train) * side**2 * 2 * dim**2


def run_pflop(cfg, train_images: float, test_images: int, whiten_from: int) -> float:
    """PFLOP of a run of `cfg` that trains `train_images` (as many each epoch) and tests
    `test_images` with its TTA, at the full side."""
    from visionbench.config import RunConfig
    from visionbench.engine.tta import tta_views

    views = max(1, len(tta_views(cfg.train.tta)))
    per_epoch = epoch_flops(cfg)
    test = flops_per_image(RunConfig(model=cfg.model).model_dump_json())[1]
    flops = sum(per_epoch) * train_images / len(per_epoch) + test * test_images * views
    return (flops + whitening_flops(cfg, whiten_from)) / 1e15


def plan_pflop(cfg) -> float:
    """The full run's PFLOP: all 50,000 training images for its epochs, all 10,000 test images."""
    trained = images_trained(CIFAR_TRAIN, cfg.train.batch_size, cfg.train.epochs)
    return run_pflop(cfg, trained, CIFAR_TEST, CIFAR_TRAIN)


def summarise(name: str, runs: list[dict], data_dir: str, quick: bool) -> dict:
    """One table row for variant `name` from its runs (one per seed)."""
    cfg = variant_config(name, data_dir, quick)
    accs = [r["test_acc"] for r in runs]
    ran = [run_pflop(cfg, r["train_images"], r["test_images"], r["train_images"] / r["epochs"]) for r in runs]
    return {
        "variant": name,
        "what": VARIANTS[name][0],
        "overrides": VARIANTS[name][1],
        "seeds": [r["seed"] for r in runs],
        "pflop_plan": plan_pflop(variant_config(name, data_dir, quick=False)),
        "pflop_ran": statistics.mean(ran),
        "minutes": statistics.median(r["wall"] for r in runs) / 60,
        "images_per_s": statistics.median(r["images_per_s"] for r in runs),
        "mfu": statistics.mean(r["mfu"] for r in runs),
        "acc_mean": statistics.mean(accs),
        "acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
    }


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| variant | what | PFLOP (plan) | PFLOP (ran) | min | train img/s | MFU | test acc | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        std = f" ± {r['acc_std']:.2%}" if r["acc_std"] is not None else ""
        lines.append(
            f"| {r['variant']} | {r['what']} | {r['pflop_plan']:.3f} | {r['pflop_ran']:.3g} | {r['minutes']:.1f} | "
            f"{r['images_per_s']:.0f} | {r['mfu']:.0%} | {r['acc_mean']:.2%}{std} | {len(r['seeds'])} |"
        )
    return "\n".join(lines)


def meets_bar(rows: list[dict]) -> list[dict]:
    """The variants at >= 90.5% mean over >= 2 seeds and <= 0.15 PFLOP (plan), cheapest first."""
    ok = [
        r for r in rows if len(r["seeds"]) >= 2 and r["acc_mean"] >= BAR_ACC and r["pflop_plan"] <= BAR_PFLOP
    ]
    return sorted(ok, key=lambda r: r["pflop_plan"])


def pick_variants(arg: str | None) -> list[str]:
    names = arg.split(",") if arg else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 (--quick: 0)")
    ap.add_argument("--variants", default=None, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument(
        "--data-dir", default=os.environ.get("VISIONBENCH_DATA", str(ROOT.parent / "shared" / "data"))
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--table-only", action="store_true", help="train nothing: the table of the runs in --json"
    )
    ap.add_argument("--json", default=None, help="default: frontier[-quick].json")
    ap.add_argument("--markdown", default=None, help="default: frontier[-quick].md")
    ap.add_argument(
        "--one-run", nargs=4, metavar=("VARIANT", "SEED", "RUNS_DIR", "OUT"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    if args.one_run:
        name, seed, runs_dir, out = args.one_run
        overrides = [*VARIANTS[name][1], *(QUICK if args.quick else [])]
        return one_run(
            int(seed), data_dir, runs_dir, out, overrides, name, peak_n=1024 if args.quick else 4096
        )

    names, seeds = pick_variants(args.variants), args.seeds or ([0] if args.quick else [0, 1])
    import torch  # after the names are checked: a typo is said at once

    stem = "frontier-quick" if args.quick else "frontier"
    json_path, md_path = Path(args.json or f"{stem}.json"), Path(args.markdown or f"{stem}.md")
    done = json.loads(json_path.read_text()) if json_path.exists() else {"quick": args.quick, "runs": []}
    if done.get("quick") != args.quick:
        sys.exit(f"{json_path} holds {'quick' if done.get('quick') else 'full'} runs: give another --json")
    have = {(r["variant"], r["seed"]) for r in done["runs"]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for seed in seeds:
                if (name, seed) in have or args.table_only:
                    print(
                        f"{name} seed {seed}: {'kept from ' + str(json_path) if (name, seed) in have else 'not run'}",
                        flush=True,
                    )
                    continue
                out = f"{tmp}/{name}-{seed}.json"
                cmd = [__file__, "--data-dir", data_dir, "--one-run", name, str(seed), tmp, out]
                r = timed_child(cmd + (["--quick"] if args.quick else []), out) | {"variant": name}
                done["runs"].append(r)
                json_path.write_text(json.dumps(done, indent=1))  # after every run: a stop loses one
                print(
                    f"{name} seed {seed}: {r['test_acc']:.2%} in {r['wall'] / 60:.1f} min "
                    f"({r['images_per_s']:.0f} img/s, {r['dtype']}, MFU {r['mfu']:.1%})",
                    flush=True,
                )
    ran = {n: [r for r in done["runs"] if r["variant"] == n and r["seed"] in seeds] for n in names}
    rows = [summarise(n, runs, data_dir, args.quick) for n, runs in ran.items() if runs]
    if not args.table_only:  # which reads the file only: another call may be writing it
        done["rows"] = rows
        json_path.write_text(json.dumps(done, indent=1))
    header = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}; `python benchmarks/cpu_frontier.py {' '.join(sys.argv[1:])}`"
        + ("; --quick: tiny slice, PFLOP (plan) is the full run's" if args.quick else "")
    )
    table = markdown(rows, header)
    md_path.write_text(table + "\n")
    print(f"\n{table}\n\nwritten: {md_path}" + ("" if args.table_only else f", {json_path}"))
    best = meets_bar(rows)
    print(
        "at the bar (>= 90.5%, >= 2 seeds, <= 0.15 PFLOP): "
        + (", ".join(r["variant"] for r in best) or "none")
    )


if __name__ == "__main__":
    main()
