"""`visionbench train`: one run end to end - data, model, the epochs, the test evaluation and
the run record - or the resume of an interrupted one. `train` reads as the table of contents;
each step is one of the small functions below it."""

from __future__ import annotations

import os
import platform
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import torch
import torch.nn as nn
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..analysis.calibration import calibrate_run
from ..analysis.evaluation import evaluation
from ..analysis.predictor import Outputs
from ..config import RunConfig, dump_config
from ..console import bars_off, count_bar, make_console
from ..data.loader import TensorLoader
from ..data.prepare import Prepared, prepare_data
from ..engine import distributed
from ..engine.checkpoint import CheckpointTimer, TrainingState
from ..engine.device import (
    amp_dtype,
    grad_scaler,
    pick_device,
    require_compile,
    resolve_amp,
    seed_everything,
)
from ..engine.distill import Teacher
from ..engine.ema import weight_average
from ..engine.features import FeatureLoader, FrozenFeatures, Inputs
from ..engine.freeze import StagedFreezing
from ..engine.loop import evaluate, predict, train_epoch_in_pieces
from ..engine.losses import create_loss
from ..engine.memory import fit_batch
from ..engine.optim import create_optimizer, create_scheduler
from ..engine.precise_bn import recompute_bn_stats
from ..engine.schedules import progressive_sides
from ..engine.stopping import StopFlag, early_stop_due, stop_on_signals
from ..engine.tta import tta_views
from ..errors import VisionbenchError
from ..models import count_params, head_name
from ..models.build import auto_settings, build_model, init_from_training_images, smallest_input, too_small
from ..models.registry import train_at_side
from ..models.weights import check_fit, describe, load_state, read_state_file
from ..runs import Run, RunView, check_writable, default_run_id, environment, runs_root
from ..runs.lock import refuse_if_owned
from ..runs.trackers import Tracker, require_tracker, start_tracker
from .teacher import cache_targets, check_teacher, load_teacher, record_teacher
from .train_multilabel import finish_multilabel, task_config, tune_thresholds
from .train_summary import diverging, run_facts, save_curves


class Interrupted(VisionbenchError):
    """Training stopped by a signal (after saving a checkpoint, unless `what` says otherwise);
    exit code 128 + signal."""

    def __init__(self, run: Run, signum: int, what: str | None = None):
        self.exit_code = 128 + signum
        super().__init__(
            what or f"stopped by signal {signum}; checkpoint saved",
            where=str(run.path),
            fix=f"continue with: visionbench train --resume {run.id} --runs-dir {run.path.parent}",
        )


def train(
    cfg: RunConfig | None,
    runs_dir: str | Path | None = None,
    resume: str | None = None,
    quiet: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> Run:
    """Train a run to the end (or resume one) and return its finished record. `on_epoch` sees
    each epoch's metrics row (a search uses it to prune); under torchrun, ranks share the work."""
    console = make_console(quiet=quiet or not distributed.is_main_process())
    root = runs_root(runs_dir)
    resumed = resumable(resume, root) if resume is not None else None
    cfg = resumed.config() if resumed else cfg
    if not resumed and cfg.name:  # a name another process trains under: said before the data
        refuse_if_owned(root / cfg.name, cfg.name, new_name=True)
    check_writable(resumed.path if resumed else root)  # a read-only runs folder: said first
    require_tracker(cfg.train.track)
    ranks = distributed.setup(pick_device(cfg.train.device), cfg.train.batch_size)
    if cfg.train.compile:
        require_compile(ranks.device)
    seed_everything(cfg.seed, ranks.device, cfg.train.deterministic, cfg.train.threads)
    asked, (cfg, data) = cfg, load_data(cfg, ranks, console)
    cfg = recorded_amp(cfg, ranks.device, console)
    model = build_model(cfg, data.dataset, ranks.device)  # data and model errors come before any folder
    teacher = load_teacher(cfg, data, root, ranks.device, console)  # or an error, before any folder
    if resumed:
        check_teacher(resumed, teacher)  # the teacher it started with, or an error
    say = lambda m: console.print(escape(m))
    cfg = fit_batch(cfg, asked, data, model, ranks, say, bool(resumed), teacher)  # or an error
    check_sides(cfg, data, model, ranks.device)  # progressive resizing's smallest side runs, or an error
    weights_report = None if resumed else initial_weights(model, cfg, root, data)
    state = training_state(cfg, model, data)  # optimizer and schedule errors, too
    if not resumed and (warning := state.freezing.unreached()):
        console.print(escape(warning), style="yellow")
    features = frozen_features(cfg, model, data, state, ranks, console)  # cache_features=on errors, too
    cache_targets(cfg, data, teacher, console)  # once per training image, where they stay the same
    # from here on the run is this process's (locked) and a run that stops says so in run.json;
    # a finished one is let go before its tracker's last write (no one trains it again)
    with claim_folder(cfg, ranks, root, resumed) as run, recorded_failure(run) as record:
        per_epoch = any(state.freezing.frozen) or hasattr(model, "start_epoch")  # parameters that pause
        trained = ranks.wrap(model, cfg.train.sync_bn, find_unused=per_epoch)
        if cfg.train.compile:  # the training step only: evaluating and saving use `model`, with clean keys
            trained = torch.compile(trained)
        scored = state.ema.module if state.ema else model  # the weights evaluated and saved
        if resumed and any(run.path.glob("checkpoint.pt*")):  # restore judges what is intact
            state.restore(run.checkpoint)
            run.truncate_metrics(state.epoch)
            console.print(f"resuming [bold]{run.id}[/] at epoch {state.epoch + 1}, batch {state.batch}")
        else:
            start_record(run, cfg, ranks.device, weights_report, console, restarted=bool(resumed))
            record_teacher(run, teacher)
        announce(run, cfg, data, model, ranks.device, console)
        record.tracker = tracker = (
            start_tracking(cfg, run, state.epoch, console) if ranks.is_main else Tracker()
        )
        amp = amp_dtype(cfg.train.amp, ranks.device)
        t_start = time.perf_counter()
        train_epochs(
            run, cfg, data, state, features, trained, scored, tracker, ranks, console, on_epoch, teacher
        )
        # the last epoch's checkpoint is on disk: a signal now stops at once, and a resume
        # starts here, at the test pass
        if ranks.is_main:  # rank 0 tests the model and writes the summary
            with stop_on_signals(at_once=True):
                tta, last = bool(tta_views(cfg.train.tta)), state.epoch - 1
                # the rest on cached features, or all; the validation pass fits the temperature
                val = lambda: features.evaluated("val", scored, tta, last)
                # multi-label: per-class thresholds tuned (temperature scaling is for a softmax)
                fit_on_val, end = (
                    (tune_thresholds, finish_multilabel) if data.multilabel else (calibrate_run, finish)
                )
                fitted = fit_on_val(run, cfg, data, val, amp, say)  # the temperature, or the thresholds
                tested = features.evaluated("test", scored, tta, last)
                wall = time.perf_counter() - t_start
                end(run, cfg, data, scored, tested, amp, state.best, wall, console, fitted)
    if ranks.is_main:
        tracker.finish(run)
    return run


def recorded_amp(cfg: RunConfig, device: torch.device, console: Console) -> RunConfig:
    """The config with train.amp as the run records it: `true` becomes the autocast chosen for
    this device (said in one line), so a resume or a later `eval` elsewhere computes the same."""
    amp = resolve_amp(cfg.train.amp, device)
    if amp is not cfg.train.amp and amp:
        console.print(f"autocast: {amp} (native on this {device.type}; train.amp=false for fp32)")
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"amp": amp})})


def resumable(ref: str, root: Path) -> Run:
    """The run `ref` names, when it can be resumed: said before any data is read. An empty
    ref (an unset shell variable) is refused, never the default run started instead."""
    if not str(ref).strip():
        raise VisionbenchError(
            "--resume needs a run id or folder; it was given an empty one",
            fix="pass the run to continue (`visionbench runs` lists them), or leave out --resume",
        )
    run = Run.open(ref, root, done="resumed")
    refuse_if_owned(run.path, run.id)
    if run.finished:
        raise VisionbenchError(
            f"run '{run.id}' already finished: there is nothing to resume (a finished run is never overwritten)",
            where=str(run.path),
            fix=f"evaluate it (visionbench eval {run.path}), or train a new run with its settings "
            f"(visionbench train --config {run.path / 'config.yaml'})",
        )
    return run


def train_epochs(
    run: Run,
    cfg: RunConfig,
    data: Prepared,
    state: TrainingState,
    features: FrozenFeatures,
    trained: nn.Module,
    scored: nn.Module,
    tracker: Tracker,
    ranks: distributed.Ranks,
    console: Console,
    on_epoch: Callable[[dict], None] | None,
    teacher: Teacher | None = None,
) -> None:
    """The epochs left: each trained (`trained`, or the rest on cached frozen features; with
    a `teacher`'s soft targets), validated and logged (`scored`), then checkpointed; an early
    stop ends them, a signal raises Interrupted once the checkpoint is saved."""
    checkpoint = (lambda: state.save(run.checkpoint)) if ranks.is_main else (lambda: None)
    amp = amp_dtype(cfg.train.amp, ranks.device)
    step = {
        "label_smoothing": cfg.train.label_smoothing,
        "grad_clip": cfg.train.grad_clip,
        "amp_dtype": amp,
        "accumulate": cfg.train.accumulate,
        "teacher": teacher,
        "multilabel": data.multilabel,
    }
    step["loss_fn"] = create_loss(cfg.train.loss, cfg.train.label_smoothing, data.loss_weights)
    if early_stop_due(run.metrics(), cfg.train.early_stop):  # resumed after an early stop: none left
        return
    if sides := epoch_sides(cfg, data):  # progressive resizing
        console.print(f"progressive resizing (train.progressive): epochs train at {runs_of(sides)} px")
    with stop_on_signals() as stop, EpochBar(console) as bar:
        pause = CheckpointTimer(stop, cfg.train.checkpoint_steps, cfg.train.checkpoint_minutes, ranks.any)
        while state.epoch < cfg.train.epochs:
            if message := state.freezing.enter(state.epoch, state.scheduler):
                console.print(escape(message))
            inputs = features.inputs(state.epoch, trained, scored)  # the rest on cached features, or all
            step["on_step"] = pause.counting(
                bar.start(state.epoch, cfg.train.epochs, inputs.train, state.batch)
            )
            with train_at_side(inputs.model, sides[state.epoch] if sides else None):
                sums = train_epoch_in_pieces(
                    inputs.model, inputs.train, state, pause, checkpoint, ranks.sum, **step
                )
            if state.batch:  # stopped mid-epoch, checkpointed
                raise interrupted(run, stop)
            bar.finish()
            if cfg.train.precise_bn:  # before validation: every figure and saved weight has them
                batches = inputs.train.epoch(state.epoch)
                recompute_bn_stats(
                    inputs.val_model, batches, cfg.train.precise_bn, amp, ranks.average, cfg.train.accumulate
                )
            row = end_epoch(run, state, sums, scored, inputs, amp)
            tracker.epoch(row)
            state.epoch += 1
            checkpoint()
            pause.reset()
            rows = run.metrics()
            say_epoch(console, row, rows, cfg, len(data.dataset.classes))
            if on_epoch is not None:
                on_epoch(row)
            if stop:
                raise interrupted(run, stop)
            if early_stop_due(rows, cfg.train.early_stop):
                console.print(f"early stop: no better accuracy for {cfg.train.early_stop} epochs")
                break


def epoch_sides(cfg: RunConfig, data: Prepared) -> list[int] | None:
    """The side training images have in each epoch under train.progressive, else None."""
    if cfg.train.progressive.scale >= 1:
        return None
    return progressive_sides(
        cfg.train.epochs, cfg.model.input_size or data.dataset.shape[1], cfg.train.progressive
    )


def check_sides(cfg: RunConfig, data: Prepared, model: nn.Module, device: torch.device) -> None:
    """train.progressive's smallest side, run once (2 blank images, no gradients): a side the
    model cannot take is an error naming the scale that runs, before any folder is made."""
    if not (sides := epoch_sides(cfg, data)):
        return
    full, p = sides[-1], cfg.train.progressive  # the last epoch trains at the full side
    try:
        with torch.no_grad(), train_at_side(model, min(sides)):
            model.eval()(torch.zeros(2, *data.dataset.shape, device=device))
    except RuntimeError as e:
        if not too_small(e):
            raise
        smallest = smallest_input(cfg, data.dataset) or full
        side = -(-smallest // p.step) * p.step  # the smallest multiple of the step that runs
        raise VisionbenchError(
            f"train.progressive.scale={p.scale:g} trains the first epochs at {min(sides)} px, and "
            f"{cfg.model.name} needs at least {smallest} px",
            fix=f"set train.progressive.scale={side / full:g} or more ({side} of {full} px)"
            if side < full
            else "set train.progressive.scale=1 (off): the model needs the full side",
        ) from None
    finally:
        model.train()


def runs_of(sides: list[int]) -> str:
    """[16, 16, 20, 32, 32] -> '16 x2, 20, 32 x2'."""
    runs = [(s, len(list(g))) for s, g in groupby(sides)]
    return ", ".join(f"{s} x{n}" if n > 1 else str(s) for s, n in runs)


def load_data(cfg: RunConfig, ranks: distributed.Ranks, console: Console) -> tuple[RunConfig, Prepared]:
    """The run's data, and its config with the unset settings chosen from it (each said once)."""
    with count_bar(console, "decoding images") as update:
        say = lambda msg: console.print(escape(msg), style="dim")
        data = prepare_data(cfg, ranks.device, say, update, ranks.shard)
    cfg, notes = auto_settings(cfg, len(data.keep), data.dataset.shape, data.dataset.originals)
    notes = data.task_notes() + notes
    cfg = task_config(cfg, data)
    distributed.check_batch(cfg.train.batch_size, ranks.world)
    data.cfg = cfg
    notes += data.weights_notes()  # or a train.class_weights error, before any folder
    for note in notes:
        console.print(escape(note), style="yellow" if note.startswith("warning") else None)
    data.cfg, data.choices = cfg, notes  # before any loader is built: they read the batch size
    return cfg, data


def initial_weights(model: nn.Module, cfg: RunConfig, root: Path, data: Prepared) -> dict | None:
    """Load model.weights (a file, or run:RUN_ID's last weights) into `model`; the load
    report, or the pretrained weights' one, or None. A model that sets layers from the
    training images (fastnet's whitening) sees them first."""
    ref = cfg.model.weights
    if hasattr(model, "init_from_data") and not (cfg.model.pretrained or ref):  # else loaded over it
        init_from_training_images(model, cfg, data)
    if not ref:
        return getattr(model, "weights_report", None)
    if ref.startswith("run:"):
        source = Run.open(ref[4:], root)
        state, where, fix = source.load_weights("last"), str(source.path), same_model(source.config())
    else:
        state, where = read_state_file(ref), ref
        fix = "train the model the file was saved from: --model NAME (`visionbench models` lists them)"
    report = load_state(model, state, reset=head_name(model) if cfg.model.reset_head else None)
    fix += "; or leave out --weights to train from scratch"
    check_fit(model, head_name(model), cfg.model.name, report, state, where, fix)
    return report


def same_model(cfg: RunConfig) -> str:
    """The options that rebuild run `cfg`'s model, said as a fix."""
    options = [f"--model {cfg.model.name}"]
    if cfg.model.kwargs:
        options.append(
            f"'model.kwargs={yaml.safe_dump(cfg.model.kwargs, default_flow_style=True, width=1000).strip()}'"
        )
    if cfg.model.input_size:
        options.append(f"model.input_size={cfg.model.input_size}")
    return f"train the run's model: {' '.join(options)}"


def frozen_features(
    cfg: RunConfig, model: nn.Module, data: Prepared, state: TrainingState, ranks, console: Console
) -> FrozenFeatures:
    """Per finetune stage, the whole model on images or the rest on cached frozen features."""
    say = lambda msg: console.print(escape(msg))
    return FrozenFeatures(cfg, model, data, state.freezing, ranks.world, say)


def claim_folder(cfg: RunConfig, ranks: distributed.Ranks, root: Path, resumed: Run | None) -> Run:
    """The run's folder: rank 0 claims it (a new, unique id unless named) and owns it - its
    lock is held until the run leaves `with` - the others see it. Claimed last, once nothing
    before training can fail; it appears with its config.yaml, already locked."""
    claimed: list[Run] = []

    def claim() -> Path:
        claimed.append(
            Run.create(
                resumed.path.parent if resumed else root,
                resumed.id if resumed else cfg.name or default_run_id(cfg.data.name, cfg.model.name),
                resume=bool(resumed),
                unique=not resumed and not cfg.name,
                files={"config.yaml": dump_config(cfg.model_copy(update={"name": None}))},
                own=True,
            )
        )
        return claimed[0].path

    path = ranks.main_first(claim)
    return claimed[0] if ranks.is_main else RunView(path)


def training_state(cfg: RunConfig, model: nn.Module, data: Prepared) -> TrainingState:
    """Optimizer, schedule, staged freezing and EMA for `model`, at epoch 0."""
    optimizer = create_optimizer(model, cfg.optim)
    freezing = StagedFreezing(model, optimizer, cfg.finetune, cfg.train.epochs)  # splits the groups first
    return TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=create_scheduler(optimizer, cfg.sched, len(data.train), cfg.train.epochs),
        freezing=freezing,
        ema=weight_average(model, cfg.train, len(data.train) * cfg.train.epochs),
        scaler=grad_scaler(cfg.train.amp, data.device),
        fingerprint=data.dataset.fingerprint,
        batch_size=cfg.train.batch_size,
    )


def start_record(
    run: Run, cfg: RunConfig, device, weights_report: dict | None, console: Console, restarted: bool
) -> None:
    """environment.json and the weights' load report of a run's first start (its config.yaml
    came with the folder)."""
    if restarted:  # stopped before its first checkpoint: start it again, same config
        console.print(f"no checkpoint in [bold]{run.id}[/] yet: starting it from the beginning")
        run.truncate_metrics(0)
    autocast = amp_dtype(cfg.train.amp, device)
    run.write_json(
        "environment.json",
        environment(device) | {"autocast": autocast and str(autocast).removeprefix("torch.")},
    )
    if weights_report:
        run.write_json("weights.json", weights_report)
        console.print(
            f"weights {escape(cfg.model.weights or 'pretrained')}: {escape(describe(weights_report))}"
        )


def announce(run: Run, cfg: RunConfig, data: Prepared, model: nn.Module, device, console: Console) -> None:
    """run.json (status, the data report predict needs) and the run's one-line header."""
    n_params = count_params(model)
    run.write_json(
        "run.json",
        {
            "status": "running",
            "pid": os.getpid(),  # with the host: `visionbench runs` tells a run whose process is gone
            "host": platform.node(),
            "data": cfg.data.name,
            "model": cfg.model.name,
            "epochs": cfg.train.epochs,
            "params": n_params,
            "choices": data.choices,  # what was chosen from the data, and the key to set instead
            "class_weights": None if data.class_weights is None else data.class_weights.tolist(),
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


def end_epoch(run: Run, state: TrainingState, sums: dict, scored: nn.Module, inputs: Inputs, amp) -> dict:
    """The epoch's metrics row (validation included), logged; best weights saved when better."""
    row = {
        "epoch": state.epoch + 1,
        "train_loss": sums["loss_sum"] / sums["seen"],
        "train_acc": sums["correct"] / sums["seen"],
        "lr": state.optimizer.param_groups[0]["lr"],
        "seconds": sums["seconds"],
        "images_per_s": sums["seen"] / sums["seconds"],
    }
    if inputs.val is not None:
        v = evaluate(inputs.val_model, inputs.val, amp)
        row |= {"val_loss": v["loss"], "val_acc": v["acc"]}
    state.scheduler.report(row.get("val_loss", row["train_loss"]))
    if row.get("val_acc", row["train_acc"]) > state.best:
        state.best = row.get("val_acc", row["train_acc"])
        run.save_weights("best.safetensors", scored)
    run.log_metrics(row)
    return row


def epoch_line(row: dict, epochs: int) -> str:
    return (
        f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
        + (f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if "val_acc" in row else "")
        + f"  {row['seconds']:.1f}s {row['images_per_s']:,.0f} img/s"
    )


def say_epoch(console: Console, row: dict, rows: list[dict], cfg: RunConfig, classes: int) -> None:
    """The epoch's line; a divergence warning once, at the first epoch that diverges."""
    console.print(epoch_line(row, cfg.train.epochs))
    if (warning := diverging(rows, cfg, classes)) and not diverging(rows[:-1], cfg, classes):
        console.print(f"[yellow]warning:[/] {escape(warning)}")


def finish(
    run: Run,
    cfg: RunConfig,
    data: Prepared,
    scored: nn.Module,
    tested: tuple[nn.Module, TensorLoader | FeatureLoader],
    amp,
    best: float,
    wall: float,
    console,
    temperature: float | None = None,
) -> None:
    """Last weights, the test evaluation (RUN/eval-last/) of `scored` on the test images or
    of the rest on their cached frozen features (`tested`), its probabilities calibrated by
    `temperature`, the curves, then summary.json: its presence marks the run finished."""
    run.save_weights("last.safetensors", scored)
    logits, targets = predict(*tested, amp, tta_views(cfg.train.tta))
    out = Outputs.from_logits(logits.numpy(), temperature)
    test = data.dataset.splits["test"]
    rep = evaluation(
        out, targets.numpy(), test.images, data.dataset.classes, run_id=run.id, weights="last",
        tta=cfg.train.tta, folder=run.path / "eval-last", temperature=temperature,
    )  # fmt: skip
    rows = save_curves(run)
    summary = {
        "test_acc": rep["top1"],
        "test_top5": rep["top5"],
        "balanced_acc": rep["balanced_acc"],  # beside top-1: a class never predicted shows here
        "macro_f1": rep["macro_f1"],
        "test_loss": rep.get("loss_uncalibrated", rep["loss"]),  # the model's own NLL, as before calibration
        "test_loss_calibrated": rep["loss"] if "loss_uncalibrated" in rep else None,
        **run_facts(cfg, data, scored, best, wall, rows, rep["n"]),
    }
    run.set_status("finished")
    run.write_json("summary.json", summary)  # written last: its presence marks the run finished
    console.print(
        f"[bold green]test accuracy {rep['top1']:.2%}[/] (top-5 {rep['top5']:.2%}, balanced "
        f"{rep['balanced_acc']:.2%}, macro-F1 {rep['macro_f1']:.2%}, {rep['n']:,} images)  "
        f"run: {escape(str(run.path))}"
    )


def start_tracking(cfg: RunConfig, run: Run, epoch: int, console: Console) -> Tracker:
    """The run's tracker (train.track), started; its failures are warnings, not errors."""
    say = lambda msg: console.print(escape(msg), style="yellow")
    return start_tracker(cfg.train.track, run, cfg, epoch, say)


@dataclass
class Outcome:
    """What `recorded_failure` tells of a run that stops early: its tracker, once started."""

    tracker: Tracker = field(default_factory=Tracker)


@contextmanager
def recorded_failure(run: Run):
    """A run that dies says so in run.json (`visionbench runs` shows it), not "running" for
    ever, and in its tracker (set on the yielded Outcome). Stopped at once (a second signal, a
    signal during the test pass) or by its output closing (`| head`): "interrupted", with
    the line that continues it."""
    outcome = Outcome()
    try:
        yield outcome
    except Interrupted:
        outcome.tracker.close("KILLED")
        raise
    except (KeyboardInterrupt, BrokenPipeError) as e:
        if run.finished:  # summary.json written, its line unprinted: nothing to resume
            return
        with suppress(VisionbenchError):  # a full disk: the error raised says it already
            run.set_status("interrupted")
        outcome.tracker.close("KILLED")
        if isinstance(e, BrokenPipeError):
            why, signum = (
                "stopped: its output was closed (a pipe such as `| head`)",
                getattr(signal, "SIGPIPE", 13),
            )
        else:
            signum = getattr(e, "signum", signal.SIGINT)
            why = f"stopped at once by signal {signum}"
        raise Interrupted(run, signum, f"{why}; its last checkpoint is kept") from None
    except Exception:
        with suppress(VisionbenchError):
            run.set_status("failed")
        outcome.tracker.close("FAILED")
        raise


def interrupted(run: Run, stop: StopFlag) -> Interrupted:
    run.set_status("interrupted")
    return Interrupted(run, stop.signum)


class EpochBar:
    """A transient progress bar per epoch; the loss (a device sync) is read every 25 steps."""

    def __init__(self, console: Console, every: int = 25):
        self.every = every
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=bars_off(console),
        )
        self.task = None

    def __enter__(self) -> EpochBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start(self, epoch: int, epochs: int, loader, batch: int) -> Callable[[int, torch.Tensor], None]:
        """A new task for the epoch; returns the per-step callback that advances it."""
        task = self.task = self.bar.add_task(
            f"epoch {epoch + 1}/{epochs}", total=len(loader), completed=batch, stats=""
        )
        t0, start = time.perf_counter(), {}

        def on_step(batch: int, loss: torch.Tensor) -> None:
            start.setdefault("batch", batch)
            self.bar.update(task, completed=batch + 1)
            if (batch + 1) % self.every == 0:
                rate = (batch + 1 - start["batch"]) * loader.batch_size / (time.perf_counter() - t0)
                self.bar.update(task, stats=f"loss {loss.item():.4f}  {rate:,.0f} img/s")

        return on_step

    def finish(self) -> None:
        self.bar.remove_task(self.task)
