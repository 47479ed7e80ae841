"""Fit a run end to end: data -> model -> engine -> run record -> figures."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .analysis.metrics import classification_report
from .analysis.plots import plot_confusion, plot_curves
from .config import RunConfig, build_config, dump_config, load_yaml
from .console import count_bar, make_console
from .data import Dataset, Split, TensorLoader, channel_stats, load_dataset, stratified_split
from .data.augment import build_augment
from .data.cache import memo
from .data.report import check_skipped, dataset_report
from .data.split import to_channels
from .data.stream import FileImages, StreamLoader
from .data.subset import select_classes
from .engine import distributed
from .engine.checkpoint import CheckpointTimer, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .engine.ema import ModelEMA
from .engine.freeze import StagedFreezing
from .engine.loop import StopFlag, evaluate, pick_device, seed_everything, train_one_epoch
from .engine.losses import create_loss
from .engine.optim import create_optimizer, create_scheduler
from .engine.stopping import early_stop_due
from .errors import VisionbenchError
from .models import count_params, create_model, head_name, resize_inputs
from .models.weights import describe, load_state, read_state_file
from .runs import Run, RunView, default_run_id, environment, runs_root


class Interrupted(VisionbenchError):
    """Training stopped by a signal after saving a checkpoint; exit code 128 + signal."""

    def __init__(self, run: Run, signum: int):
        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by signal {signum}; checkpoint saved",
            where=str(run.path),
            fix=f"continue with: visionbench train --resume {run.id} --runs-dir {run.path.parent}",
        )


@dataclass
class Prepared:
    """What a run trains and evaluates on. Loaders and the report are built on first use, so
    re-evaluating a run never copies its training set to the device or hashes its images."""

    cfg: RunConfig
    dataset: Dataset
    device: torch.device
    keep: np.ndarray  # train indices trained on
    held: np.ndarray  # train indices held out for validation
    mean: list[float]
    std: list[float]
    shard: tuple[int, int] = (0, 1)  # (rank, world): a distributed rank trains on its slice

    def loader(self, split: str, idx=None, train: bool = False) -> TensorLoader:
        s = self.dataset.splits[split]
        images, labels = (s.images, s.labels) if idx is None else (s.images[idx], s.labels[idx])
        aug = self.cfg.aug if train else None
        streamed = isinstance(images, FileImages)
        return (partial(StreamLoader, workers=self.cfg.data.workers) if streamed else TensorLoader)(
            images,
            labels,
            self.cfg.train.batch_size if train else self.cfg.train.eval_batch_size,
            device=self.device,
            mean=self.mean,
            std=self.std,
            channels_last=self.cfg.train.channels_last,
            train=train,
            crop_padding=aug.crop_padding if aug else 0,
            flip=bool(aug and aug.flip),
            seed=self.cfg.seed,
            augment=build_augment(self.cfg.aug, len(self.dataset.classes)) if train else None,
            repeats=self.cfg.aug.repeats,
            shard=self.shard if train else (0, 1),
        )

    @cached_property
    def train(self) -> TensorLoader:
        return self.loader("train", self.keep, train=True)

    @cached_property
    def val(self) -> TensorLoader | None:
        if "val" in self.dataset.splits:  # the dataset's own val/ split wins over a carved one
            return self.loader("val")
        return self.loader("train", self.held) if len(self.held) else None

    @cached_property
    def test(self) -> TensorLoader:
        return self.loader("test")

    @cached_property
    def report(self) -> dict:  # counts per class, warnings (imbalance, gaps, leaks, skipped files)
        return memo(self.dataset, "report", lambda: dataset_report(self.dataset))

    @property
    def stats(self) -> dict:
        return {
            "train": len(self.keep),
            "val": len(self.dataset.splits["val"]) if "val" in self.dataset.splits else len(self.held),
            "test": len(self.dataset.splits["test"]),
            "mean": self.mean,
            "std": self.std,
            "val_split": "the dataset's own val split"
            if "val" in self.dataset.splits
            else f"stratified {self.cfg.data.val_fraction:.0%} of train, seed {self.cfg.data.split_seed}",
        }


def prepare_data(
    cfg: RunConfig,
    device: torch.device,
    say: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Prepared:
    # folder-only options, passed only when set: other sources refuse options they do not take
    options = {
        "img_size": cfg.data.img_size,
        "resize": cfg.data.resize if cfg.data.resize != "crop" else None,
        "stream": cfg.data.stream or None,
    }
    options = {k: v for k, v in options.items() if v is not None}
    ds = load_dataset(cfg.data.name, cfg.data.dir, say, on_progress, **options)
    check_skipped(ds, cfg.data.strict, cfg.data.max_bad_fraction)
    if cfg.data.channels and cfg.data.stream:
        raise VisionbenchError(
            "data.channels cannot convert streamed images", fix="drop data.stream or data.channels"
        )
    if cfg.data.channels:
        ds = replace(
            ds,
            splits={
                k: Split(to_channels(s.images, cfg.data.channels), s.labels) for k, s in ds.splits.items()
            },
        )
    if cfg.data.stream and (cfg.data.classes or cfg.data.per_class or cfg.data.test_per_class):
        raise VisionbenchError(
            "data.classes and data.per_class select from cached images, not streamed ones",
            fix="drop data.stream, or make a folder of the classes wanted",
        )
    ds = select_classes(
        ds, cfg.data.classes, cfg.data.per_class, cfg.data.split_seed, cfg.data.test_per_class
    )
    train = ds.splits["train"]
    # a dataset with its own val split (folder: train/ val/ test/) keeps all of train for training
    fraction = 0.0 if "val" in ds.splits else cfg.data.val_fraction
    keep, held = stratified_split(train.labels, fraction, cfg.data.split_seed)
    # streamed images are decoded to be measured: a sample of about 1,000 is enough
    sample = keep[:: max(1, len(keep) // 1000)] if cfg.data.stream else keep
    key = f"stats-{fraction}-{cfg.data.split_seed}"
    mean, std = memo(ds, key, lambda: channel_stats(train.images, sample))
    return Prepared(cfg, ds, device, keep, held, mean, std, shard)


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA when asked; never on CPU, where it is slower for these models."""
    return torch.bfloat16 if cfg.train.amp and device.type == "cuda" else None


def build_model(cfg: RunConfig, ds: Dataset, device: torch.device, init_weights: bool = True) -> nn.Module:
    """The run's model for `ds` (a Dataset, or anything with its .classes and .shape);
    init_weights=False skips the pretrained file when a run's own weights are loaded next."""
    c, h, _ = ds.shape
    size = cfg.model.input_size or h
    model = create_model(
        cfg.model.name,
        num_classes=len(ds.classes),
        in_chans=c,
        img_size=size,
        pretrained=cfg.model.pretrained and init_weights,
        defaults={"small_stem": cfg.model.small_stem, "dropout": cfg.model.dropout},
        **cfg.model.kwargs,
    )
    if size != h:
        resize_inputs(model, size)
    model = model.to(device)
    if cfg.train.channels_last:  # measured 1.5x faster on 2 CPU cores for small_cnn, and on GPUs
        model = model.to(memory_format=torch.channels_last)
    return model


@contextmanager
def recorded_failure(run: Run):
    """A run that dies says so in run.json (`visionbench runs` shows it), not "running" for ever."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        run.set_status("interrupted")
        raise
    except Exception:
        run.set_status("failed")
        raise


@contextmanager
def stop_on_signals():
    """SIGINT/SIGTERM set a flag instead of killing: the loop saves a checkpoint and stops."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _):
        if flag:  # a second signal: the user means it, stop now
            raise KeyboardInterrupt
        flag.signum = signum

    for s in old:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train(
    cfg: RunConfig,
    runs_dir: str | Path | None = None,
    resume: str | None = None,
    quiet: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> Run:
    """Train a run to the end (or resume one) and return its finished record. `on_epoch` sees
    each epoch's metrics row (a search uses it to prune); under torchrun, ranks share the work."""
    console = make_console(quiet=quiet or not distributed.is_main_process())
    root = runs_root(runs_dir)
    if resume:
        run = Run.open(resume, root)
        cfg = read_config(run)
    ranks = distributed.setup(pick_device(cfg.train.device), cfg.train.batch_size)
    device = ranks.device
    seed_everything(cfg.seed, device, cfg.train.deterministic, cfg.train.threads)
    amp = amp_dtype(cfg, device)
    with count_bar(console, "decoding images") as update:
        data = prepare_data(
            cfg, device, lambda msg: console.print(escape(msg), style="dim"), update, ranks.shard
        )
    model = build_model(cfg, data.dataset, device)  # data and model errors come before any folder
    weights_report = None if resume else initial_weights(model, cfg, root)
    path = ranks.main_first(
        lambda: (
            Run.create(
                run.path.parent if resume else root,
                run.id if resume else cfg.name or default_run_id(cfg.data.name, cfg.model.name),
                resume=bool(resume),
                unique=not resume and not cfg.name,
            ).path
        )
    )
    run = Run(path) if ranks.is_main else RunView(path)
    optimizer = create_optimizer(model, cfg.optim)
    freezing = StagedFreezing(model, optimizer, cfg.finetune, cfg.train.epochs)
    # what trains; `model` is evaluated and saved. Frozen stages leave parameters without grads.
    trained = ranks.wrap(model, cfg.train.sync_bn, find_unused=any(freezing.frozen))
    scheduler = create_scheduler(optimizer, cfg.sched, len(data.train), cfg.train.epochs)
    n_params = count_params(model)
    loss_fn = create_loss(cfg.train.loss, cfg.train.label_smoothing)
    ema = ModelEMA(model, cfg.train.ema) if cfg.train.ema else None
    scored = ema.module if ema else model  # the weights evaluated and saved

    start_epoch, start_batch, partial, best = 0, 0, None, -1.0
    if resume and any(run.path.glob("checkpoint.pt*")):  # load_checkpoint judges what is intact
        ck = load_checkpoint(run.checkpoint)
        if ck["fingerprint"] != data.dataset.fingerprint or ck["batch_size"] != cfg.train.batch_size:
            raise VisionbenchError(
                "the checkpoint was made with other data or another batch size",
                where=str(run.checkpoint),
                fix="resume with the run's own data",
            )
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        freezing.load_state_dict(ck.get("freezing", {}))
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        start_epoch, start_batch, partial, best = ck["epoch"], ck["batch"], ck["partial"], ck["best"]
        run.truncate_metrics(start_epoch)
        console.print(f"resuming [bold]{run.id}[/] at epoch {start_epoch + 1}, batch {start_batch}")
    else:
        if resume:  # stopped before its first checkpoint: start it again, same config
            console.print(f"no checkpoint in [bold]{run.id}[/] yet: starting it from the beginning")
            run.truncate_metrics(0)
        run.write_text("config.yaml", dump_config(cfg.model_copy(update={"name": None})))
        run.write_json("environment.json", environment(device))
        if weights_report:
            run.write_json("weights.json", weights_report)
            console.print(
                f"weights {escape(cfg.model.weights or 'pretrained')}: {escape(describe(weights_report))}"
            )
    run.write_json(
        "run.json",
        {
            "status": "running",
            "data": cfg.data.name,
            "model": cfg.model.name,
            "epochs": cfg.train.epochs,
            "params": n_params,
            "data_report": {
                "source": data.dataset.source,
                "fingerprint": data.dataset.fingerprint,
                "classes": data.dataset.classes,  # with shape and splits' mean/std: what predict needs
                "shape": list(data.dataset.shape),
                "splits": data.stats,
                **data.report,
            },
        },
    )
    console.print(
        f"[bold]{run.id}[/]  {escape(cfg.model.name)} ({n_params:,} params) on {escape(cfg.data.name)} "
        f"({data.stats['train']:,} train / {data.stats['val']:,} val / {data.stats['test']:,} test) "
        f"device {device}"
    )
    for warning in data.report["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")

    def checkpoint(epoch: int, batch: int, partial: dict | None) -> None:
        if not ranks.is_main:
            return
        try:
            save_checkpoint(
                run.checkpoint,
                {
                    "epoch": epoch,
                    "batch": batch,
                    "partial": partial,
                    "best": best,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "ema": ema.state_dict() if ema else None,
                    "rng": rng_state(),
                    "freezing": freezing.state_dict(),
                    "fingerprint": data.dataset.fingerprint,
                    "batch_size": cfg.train.batch_size,
                },
            )
        except OSError as e:
            raise VisionbenchError(
                f"cannot write the checkpoint: {e.strerror or e}",
                where=str(run.checkpoint),
                fix="free disk space, then `visionbench train --resume` (the previous checkpoint is intact)",
            ) from None

    t_start = time.perf_counter()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with recorded_failure(run), stop_on_signals() as stop, bar:
        # breaks the epoch at a batch boundary on a signal or when a periodic checkpoint is due
        pause = CheckpointTimer(stop, cfg.train.checkpoint_steps, cfg.train.checkpoint_minutes, ranks.any)
        for epoch in range(start_epoch, cfg.train.epochs):
            if message := freezing.enter(epoch, scheduler):
                console.print(escape(message))
            task = bar.add_task(
                f"epoch {epoch + 1}/{cfg.train.epochs}",
                total=len(data.train),
                completed=start_batch,
                stats="",
            )
            on_step = pause.counting(progress_callback(bar, task, data.train))
            while True:  # the epoch, in pieces cut by checkpoints
                tr = train_one_epoch(
                    trained,
                    data.train,
                    optimizer,
                    scheduler,
                    epoch=epoch,
                    start_batch=start_batch,
                    label_smoothing=cfg.train.label_smoothing,
                    grad_clip=cfg.train.grad_clip,
                    amp_dtype=amp,
                    stop=pause,
                    on_step=on_step,
                    loss_fn=loss_fn,
                    ema=ema,
                )
                tr = ranks.sum(tr)
                if partial:  # the part of this epoch trained before the last checkpoint
                    tr = {k: tr[k] + partial.get(k, 0) if k in PARTIAL_SUMS else tr[k] for k in tr}
                if not (tr["stopped"] and tr["next_batch"] < len(data.train)):
                    break
                start_batch, partial = tr["next_batch"], {k: tr[k] for k in PARTIAL_SUMS}
                checkpoint(epoch, start_batch, partial)
                pause.reset()
                if stop:
                    run.set_status("interrupted")
                    raise Interrupted(run, stop.signum)
            bar.remove_task(task)
            start_batch, partial = 0, None
            row = {
                "epoch": epoch + 1,
                "train_loss": tr["loss_sum"] / tr["seen"],
                "train_acc": tr["correct"] / tr["seen"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": tr["seconds"],
                "images_per_s": tr["seen"] / tr["seconds"],
            }
            if data.val is not None:
                v = evaluate(scored, data.val, amp)
                row |= {"val_loss": v["loss"], "val_acc": v["acc"]}
            scheduler.report(row.get("val_loss", row["train_loss"]))
            if row.get("val_acc", row["train_acc"]) > best:
                best = row.get("val_acc", row["train_acc"])
                run.save_weights("best.safetensors", scored)
            run.log_metrics(row)
            checkpoint(epoch + 1, 0, None)
            pause.reset()
            console.print(
                f"epoch {epoch + 1:>3}/{cfg.train.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
                + (f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if "val_acc" in row else "")
                + f"  {row['seconds']:.1f}s {row['images_per_s']:,.0f} img/s"
            )
            if on_epoch is not None:
                on_epoch(row)
            if stop:
                run.set_status("interrupted")
                raise Interrupted(run, stop.signum)
            if early_stop_due(run.metrics(), cfg.train.early_stop):
                console.print(f"early stop: no better accuracy for {cfg.train.early_stop} epochs")
                break
    train_seconds = time.perf_counter() - t_start
    if not ranks.is_main:  # rank 0 tests the model and writes the summary
        return run

    run.save_weights("last.safetensors", scored)
    test = evaluate(scored, data.test, amp)
    report = classification_report(test["logits"], test["targets"], data.dataset.classes)
    write_figures(run, report, data.dataset.classes)
    rows = run.metrics()
    summary = {
        "test_acc": report["top1"],
        "test_top5": report["top5"],
        "test_loss": test["loss"],
        "best_val_acc": best if data.val is not None else None,
        "epochs": len(rows),  # fewer than train.epochs after an early stop
        "train_seconds": sum(r["seconds"] for r in rows),
        "wall_seconds_this_process": train_seconds,
        "params": n_params,
        "device": str(device),
        "data": cfg.data.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "test_n": report["n"],
    }
    run.write_json("eval.json", report)
    run.set_status("finished")
    run.write_json("summary.json", summary)  # written last: its presence marks the run finished
    console.print(
        f"[bold green]test accuracy {report['top1']:.2%}[/] (top-5 {report['top5']:.2%}, "
        f"{report['n']:,} images)  run: {escape(str(run.path))}"
    )
    return run


def initial_weights(model: nn.Module, cfg: RunConfig, root: Path) -> dict | None:
    """Load model.weights (a file, or run:RUN_ID's last weights) into `model`; the load
    report, or the pretrained weights' one, or None."""
    ref = cfg.model.weights
    if not ref:
        return getattr(model, "weights_report", None)
    state = Run.open(ref[4:], root).load_weights("last") if ref.startswith("run:") else read_state_file(ref)
    return load_state(model, state, reset=head_name(model) if cfg.model.reset_head else None)


PARTIAL_SUMS = ("loss_sum", "correct", "seen", "seconds")


def progress_callback(bar: Progress, task, loader: TensorLoader, every: int = 25):
    """Advance the bar each step; read the loss (a device sync) only every `every` steps."""
    t0, start = time.perf_counter(), {}

    def on_step(batch: int, loss: torch.Tensor) -> None:
        start.setdefault("batch", batch)
        bar.update(task, completed=batch + 1)
        if (batch + 1) % every == 0:
            rate = (batch + 1 - start["batch"]) * loader.batch_size / (time.perf_counter() - t0)
            bar.update(task, stats=f"loss {loss.item():.4f}  {rate:,.0f} img/s")

    return on_step


def read_config(run: Run) -> RunConfig:
    path = run.path / "config.yaml"
    return build_config(load_yaml(path), str(path))


def write_figures(run: Run, report: dict, classes: list[str]) -> None:
    """Learning curves and the test confusion matrix, once, when training ends."""
    rows = run.metrics()
    if rows:
        plot_curves(rows, run.path / "curves.png", title=run.id)
    plot_confusion(
        report["confusion"],
        classes,
        run.path / "confusion.png",
        title=f"{run.id}: test top-1 {report['top1']:.2%}",
    )


def run_data(run: Run, cfg: RunConfig, device: torch.device) -> Prepared:
    """A run's own data, refused if it changed since the run was trained and tested on it."""
    data = prepare_data(cfg, device)
    trained_on = run.read_json("run.json").get("data_report", {}).get("fingerprint")
    if trained_on and trained_on != data.dataset.fingerprint:
        raise VisionbenchError(
            "the data found now differs from the data this run was trained and tested on",
            where=data.dataset.source,
            fix="evaluate with the run's own data (data.dir in its config.yaml, or --data-dir)",
        )
    return data


@dataclass
class LoadedRun:
    """A finished run back in memory: its config, data and weights (model in eval mode)."""

    run: Run
    cfg: RunConfig
    data: Prepared
    model: nn.Module


def load_run(
    ref: str, runs_dir: str | Path | None = None, weights: str = "last", device: str = "auto"
) -> LoadedRun:
    """Open a run with its own data (refused if it changed since training) and its weights."""
    run = Run.open(ref, runs_root(runs_dir))
    cfg = read_config(run)
    dev = pick_device(device)
    data = run_data(run, cfg, dev)
    model = build_model(cfg, data.dataset, dev, init_weights=False)
    model.load_state_dict(run.load_weights(weights))
    return LoadedRun(run, cfg, data, model.eval())
