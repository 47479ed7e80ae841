"""The fast network and its training pieces: whitening, the whitening bias's warm-up, Lookahead,
alternating flips, the norm learning rate, flip + translate TTA, bf16 autocast on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import visionbench.engine.device as device_module
from visionbench.commands.train import train
from visionbench.config import OptimConfig, SchedConfig, resolve_config
from visionbench.data.loader import TensorLoader
from visionbench.engine.optim import create_optimizer, create_scheduler
from visionbench.engine.tta import tta_views
from visionbench.errors import VisionbenchError
from visionbench.models import count_params, create_model
from visionbench.runs import Run

# the fast recipe, shrunk to digits: 16 px, narrow groups (a few seconds on 2 cores)
FAST_DIGITS = [
    "data.name=digits",
    "model.input_size=16",
    "model.kwargs={widths: [8, 16, 16]}",
    "train.batch_size=128",
]


def test_default_fastnet_has_airbench94s_size():
    model = create_model("fastnet", num_classes=10)
    assert count_params(model) == pytest.approx(1.97e6, rel=0.01)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(VisionbenchError, match="model.input_size=32"):
        create_model("fastnet", num_classes=10, img_size=8)


def test_whitening_makes_patches_uncorrelated_with_unit_variance():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)  # correlated channels, smooth in space: like photos
    x = torch.einsum("ij,bjhw->bihw", mix, torch.randn(64, 3, 18, 18))
    x = 10 * nn.functional.avg_pool2d(x, 3, stride=1)  # variances well above the eps (5e-4)
    model = create_model("fastnet", num_classes=10, widths=[8, 8, 8])
    model.init_from_data(x)
    out = nn.functional.conv2d(
        x, model.whiten.weight[:12]
    )  # the 12 filters; the other 12 are their negatives
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    cov = flat @ flat.T / flat.shape[1]
    assert torch.allclose(cov, torch.eye(12), atol=0.02)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])


def whitening_on_training_images(overrides: list[str]) -> tuple[torch.Tensor, set[int]]:
    """A new run's whitening, measured: the mean square of each whitening filter's output over
    every training image as the network sees it (through the model's own resize), and the
    classes of the images it was set from."""
    from visionbench.commands.train import initial_weights
    from visionbench.data.prepare import prepare_data
    from visionbench.models.build import auto_settings, build_model

    cfg = resolve_config([], ["model.name=fastnet", "model.kwargs={widths: [8, 8, 8]}", *overrides])
    data = prepare_data(cfg, torch.device("cpu"))
    cfg, _ = auto_settings(cfg, len(data.keep), data.dataset.shape)
    data.cfg, loader, drawn = cfg, data.loader, []
    data.loader = lambda split, idx=None, **kw: drawn.append(idx) or loader(split, idx, **kw)
    model = build_model(cfg, data.dataset, torch.device("cpu"))
    initial_weights(model, cfg, None, data)
    labels = data.dataset.splits["train"].labels
    outputs = []
    model.whiten.register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        for x, _ in loader("train", data.keep).epoch(0):
            model.eval()(x)
    half = model.whiten.out_channels // 2  # the other half are the negatives; the bias starts at 0
    return torch.cat(outputs)[:, :half].square().mean((0, 2, 3)), set(labels[drawn[0]].tolist())


def test_whitening_is_set_from_every_class_of_a_class_sorted_folder(tmp_path, monkeypatch):
    """A folder is stored sorted by class: the first images (the CIFAR-10 JPEG copy's first
    5,000) are one class. Set from 30 of 120 here, the whitened patches of all of them still
    have unit variance."""
    import visionbench.models.build as build

    rng = np.random.default_rng(0)
    looks = {  # each class its own patch statistics: grey, colour noise, smooth colour
        "ant": lambda: np.repeat(rng.integers(0, 256, (12, 12, 1)), 3, axis=2),
        "bee": lambda: rng.integers(0, 256, (12, 12, 3)),
        "cow": lambda: np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((3, 3, 1))),
    }
    for split, count in (("train", 40), ("test", 2)):
        for cls, look in looks.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(look().astype(np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    monkeypatch.setattr(build, "WHITEN_IMAGES", 30)
    moments, classes = whitening_on_training_images([f"data.name=folder:{tmp_path}", "data.val_fraction=0"])
    assert torch.all((moments > 0.7) & (moments < 1.3)), moments  # from "ant" alone: up to 10^3
    assert classes == {0, 1, 2}


def test_whitening_is_set_at_the_input_size_the_network_sees():
    """Digits are 8 px; with model.input_size=16 the network sees them resized: set from the
    8 px images, the whitened variances were [1.06, 0.18, 0.17, 0.03]."""
    moments, classes = whitening_on_training_images(["data.name=digits", "model.input_size=16"])
    assert classes == set(range(10))
    assert torch.all((moments > 0.9) & (moments < 1.05)), moments  # the smallest: eps-damped, 0.93


def test_whitening_bias_trains_only_in_the_first_epochs():
    model = create_model("fastnet", num_classes=10, img_size=16, widths=[8, 8, 8], whiten_bias_epochs=2)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    for epoch in range(4):
        model.start_epoch(epoch)
        before = model.whiten.bias.clone()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        assert torch.equal(model.whiten.bias, before) == (epoch >= 2), epoch


def airbench_lookahead(model: nn.Module, total_steps: int):
    """airbench 0.1.8's Lookahead (airbench/utils.py: LookaheadState and the lines of train()
    that drive it), transcribed: the whole state dict copied when training starts; after every
    step, every 5th step an update with decay alpha_schedule[step]; at the last step an update
    with decay 1.0, which copies the average back. Returns the per-step callback."""
    net_ema = {k: v.clone() for k, v in model.state_dict().items()}
    alpha_schedule = 0.95**5 * (torch.arange(total_steps + 1) / total_steps) ** 3
    current_steps = 0

    def update(decay):
        for ema_param, net_param in zip(net_ema.values(), model.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float):
                ema_param.lerp_(net_param, 1 - decay)
                net_param.copy_(ema_param)

    def after_step(batch, loss):
        nonlocal current_steps
        current_steps += 1
        if current_steps % 5 == 0:
            update(decay=alpha_schedule[current_steps].item())
        if current_steps >= total_steps:
            update(decay=1.0)

    return after_step


@pytest.mark.parametrize("batch, epochs", [(20, 3), (24, 2)], ids=["18-steps", "10-steps"])
def test_lookahead_is_airbenchs(batch, epochs, one_thread):
    """The fast recipe's Lookahead as training wires it (training_state's step count, the loop's
    update after each step) against airbench 0.1.8's own update, written out above: the same
    model, batches, optimizer and schedule, only the averaging differs. 18 steps: the last 3
    are dropped by the final copy-back; 10: the last step is also a pull."""
    import copy

    from visionbench.commands.train import training_state
    from visionbench.data.prepare import prepare_data
    from visionbench.engine.loop import train_one_epoch
    from visionbench.models.build import build_model

    size = ["data.per_class=12", "data.val_fraction=0", f"train.batch_size={batch}", f"train.epochs={epochs}"]
    overrides = [*FAST_DIGITS, *size]  # 120 images: 6 or 5 steps an epoch
    cfg = resolve_config([], overrides, recipe="fast")
    data = prepare_data(cfg, torch.device("cpu"))
    data.cfg = cfg
    torch.manual_seed(0)
    model = build_model(cfg, data.dataset, torch.device("cpu"))
    ref_model = copy.deepcopy(model)
    ours = training_state(cfg, model, data)
    plain = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lookahead": 0})})
    ref = training_state(plain, ref_model, data)  # the same optimizer and schedule, no averaging
    total = len(data.train) * epochs
    after_step = airbench_lookahead(ref_model, total)
    for epoch in range(epochs):
        for state, hooks in ((ours, {"ema": ours.ema}), (ref, {"on_step": after_step})):
            state.freezing.enter(epoch, state.scheduler)
            train_one_epoch(state.model, data.train, state.optimizer, state.scheduler, epoch=epoch, **hooks)
    assert ours.ema.steps == total and ours.ema.every == 5
    for (name, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), name
    # its state round-trips (resume)
    again = training_state(cfg, model, data).ema
    again.load_state_dict(ours.ema.state_dict())
    assert again.steps == total and all(torch.equal(a, b) for a, b in zip(again.slow, ours.ema.slow))


def test_alternating_flips_mirror_each_image_every_other_epoch():
    images = torch.arange(40 * 2 * 2, dtype=torch.uint8).view(40, 1, 2, 2).numpy()
    loader = TensorLoader(images, list(range(40)), 40, train=True, flip="alternate", seed=3)

    def by_image(epoch):
        x, y = next(loader.epoch(epoch))
        flipped = ~torch.isclose(
            x[:, 0, 0, 0],
            loader.images[y, 0, 0, 0].float() * loader.scale[0, 0, 0, 0] + loader.shift[0, 0, 0, 0],
        )
        return flipped[torch.argsort(y)]

    e0, e1, e2 = by_image(0), by_image(1), by_image(2)
    assert 5 < e0.sum() < 35  # random per image ...
    assert torch.equal(e1, ~e0) and torch.equal(e2, e0)  # ... then mirrored every other epoch


def test_norm_layers_learn_faster_and_decay_alike():
    model = create_model("fastnet", num_classes=10, widths=[8, 8, 8])
    cfg = OptimConfig(lr=1.5, weight_decay=1e-3, bias_decay=True, norm_lr_mult=64)
    opt = create_optimizer(model, cfg)
    decay, flat, norm = opt.param_groups
    assert norm["lr"] == 96 and norm["weight_decay"] == pytest.approx(1e-3 / 64)
    assert all(p.ndim == 1 for p in norm["params"]) and len(norm["params"]) == 6  # the BN biases only
    assert flat["params"] == [model.whiten.bias] and flat["weight_decay"] == 1e-3
    assert not any(
        p is model.groups[0].norm1.weight for g in opt.param_groups for p in g["params"]
    )  # frozen scale
    default = create_optimizer(model, OptimConfig(lr=0.1))
    assert [g["weight_decay"] for g in default.param_groups] == [5e-4, 0.0]
    sched = create_scheduler(
        opt, SchedConfig(name="linear", warmup_epochs=2.3, warmup_start=0.2, min_lr_ratio=0.07), 10, 10
    )
    assert opt.param_groups[2]["lr"] == pytest.approx(96 * (0.2 + 0.8 / 23))
    for _ in range(100):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.5 * 0.07)


def test_flip_translate_views_average_to_the_plain_logits_of_an_invariant_model():
    """A model blind to mirroring and to the 1-pixel shifts: per-pixel layers, then the max over
    the image. On images whose border ring repeats its inner neighbours, a 1-px shift with the
    edge reflected in keeps every pixel value, so each of the six views gives the model's plain
    logits, and their weighted mean (what evaluation computes, engine/loop.predict) must too."""
    from visionbench.engine.loop import predict

    views = tta_views("flip-translate")
    assert len(views) == 6 and math.isclose(sum(w for w, _ in views), 1.0)
    x = torch.randn(2, 3, 8, 8)
    shifted = [v(x) for _, v in views]
    assert all(s.shape == x.shape for s in shifted)
    assert torch.equal(shifted[4][..., 1:, 1:], x[..., :-1, :-1])  # one view moved down-right by a pixel
    assert not any(torch.equal(shifted[i], shifted[j]) for i in range(6) for j in range(i))
    torch.manual_seed(0)
    invariant = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.Tanh(), nn.Conv2d(16, 10, 1), nn.AdaptiveMaxPool2d(1), nn.Flatten()
    )
    # bright pixels, 10 px with the outer ring repeated: a view that brought in a pixel of
    # another value (a zero edge instead of the reflected one) would change some max
    inner = np.random.default_rng(0).integers(128, 256, (12, 3, 8, 8), dtype=np.uint8)
    images = np.pad(inner, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    loader = TensorLoader(images, np.zeros(12, dtype=np.int64), 5, mean=[0.0] * 3, std=[0.2] * 3)
    plain, _ = predict(invariant, loader)
    averaged, _ = predict(invariant, loader, views=views)
    assert torch.allclose(averaged, plain, atol=1e-5)
    assert not torch.allclose(plain[0], plain[1], atol=1e-3)  # the logits depend on the image
    not_invariant = nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert not torch.allclose(
        predict(not_invariant, loader, views=views)[0], predict(not_invariant, loader)[0]
    )


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_fast_recipe_trains_resumes_exactly_and_tests_with_tta(tmp_path, monkeypatch):
    from conftest import cut_then_resume

    from visionbench.commands.evaluate import evaluate

    cfg = resolve_config([], FAST_DIGITS + ["train.epochs=4", "data.val_fraction=0.1"], recipe="fast")
    assert (cfg.model.name, cfg.train.lookahead, cfg.train.tta, cfg.aug.flip) == (
        "fastnet",
        5,
        "flip-translate",
        "alternate",
    )
    full = train(cfg.model_copy(update={"name": "full"}), quiet=True)
    summary = full.read_json("summary.json")
    assert (
        summary["tta"] == "flip-translate" and summary["test_acc"] > 0.3
    )  # learns (flipped digits, tiny widths)
    # the figure says which views made it, and `eval` reproduces it: by default with the run's own
    # views, into the same bundle; other views go to a bundle of their own
    assert full.read_json("eval-last/metrics.json")["tta"] == "flip-translate"
    again = evaluate("full")
    assert again["tta"] == "flip-translate" and again["bundle"].endswith("eval-last")
    assert again["top1"] == summary["test_acc"]
    plain = evaluate("full", tta="none")
    assert plain["tta"] == "none" and plain["bundle"].endswith("eval-last-none")
    assert full.read_json("eval-last/metrics.json")["top1"] == summary["test_acc"]  # not overwritten
    # SIGTERM at step 17 of 10 an epoch: mid-epoch 2, inside the whitening bias's epochs
    resumed = cut_then_resume(monkeypatch, tmp_path, cfg, 17)
    a, b = full.load_weights("last"), resumed.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_autocast_runs_on_cpus_with_native_bf16(monkeypatch):
    """Where the CPU has native bf16 the training steps run under bf16 autocast, and the run
    records it; here VISIONBENCH_CPU_BF16=1 forces the check, so the autocast path itself runs
    on this CPU (natively or emulated)."""
    cpu = torch.device("cpu")
    assert device_module.amp_dtype(True, cpu) is None  # the suite's default: fp32 (conftest)
    monkeypatch.setenv("VISIONBENCH_CPU_BF16", "1")
    assert (
        device_module.amp_dtype(True, cpu) == torch.bfloat16 and device_module.amp_dtype(False, cpu) is None
    )
    monkeypatch.delenv("VISIONBENCH_CPU_BF16")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert device_module.amp_dtype(True, cpu) == (torch.bfloat16 if native else None)
    monkeypatch.setenv("VISIONBENCH_CPU_BF16", "1")
    convs = []  # the dtype each convolution computed in, while gradients are recorded (training)

    def seen(module, args, output):
        if isinstance(module, torch.nn.Conv2d) and torch.is_grad_enabled():
            convs.append(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(seen)
    try:
        cfg = resolve_config(
            [], ["data.name=digits", "model.name=small_cnn", "train.epochs=1", "model.input_size=16"]
        )
        run = train(cfg, quiet=True)
    finally:
        hook.remove()
    assert convs and set(convs) == {torch.bfloat16}
    assert run.config().train.amp == "bf16"
    assert json.loads((run.path / "environment.json").read_text())["autocast"] == "bfloat16"
    assert Run(run.path).read_json("summary.json")["test_acc"] > 0.3


@pytest.mark.parametrize(
    "capability, chosen", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_cuda_autocast_is_bf16_from_ampere_and_fp16_with_a_scaler_before(monkeypatch, capability, chosen):
    """V100 (7.0) and T4 (7.5) emulate bf16: they get fp16 autocast and a gradient scaler; A100
    (8.0) and H100 (9.0) get bf16 and no scaler. An fp16 run reopened on a bf16-only CPU falls
    back to fp32, with a warning."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    device_module.warn_emulated.cache_clear()
    cuda = torch.device("cuda")
    assert device_module.resolve_amp(True, cuda) == chosen
    assert device_module.amp_dtype(True, cuda) == device_module.AUTOCAST[chosen]
    if chosen == "fp16":
        with pytest.warns(UserWarning, match="does not run bf16 natively: computing in fp32"):
            assert device_module.amp_dtype("bf16", cuda) is None
    else:
        assert device_module.amp_dtype("bf16", cuda) == torch.bfloat16
    assert (device_module.grad_scaler(True, cuda) is not None) == (chosen == "fp16")
    assert device_module.resolve_amp(False, cuda) is False


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_fp16_steps_go_through_the_gradient_scaler(monkeypatch):
    """The fp16 path (pre-Ampere GPUs) scales the loss, unscales before clipping, and keeps the
    scale in the checkpoint; run here on the CPU's fp16 autocast, declared native for the test."""
    from visionbench.engine.checkpoint import load_checkpoint

    monkeypatch.setattr(device_module, "native_autocasts", lambda device: ("fp16",))
    scaled = []
    real = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale", lambda self, x: scaled.append(1) or real(self, x))
    cfg = resolve_config(
        [], ["data.name=digits", "model.name=small_cnn", "train.epochs=1", "train.grad_clip=1.0"]
    )
    run = train(cfg, quiet=True)
    assert run.config().train.amp == "fp16" and scaled
    assert load_checkpoint(run.checkpoint)["scaler"]["scale"] > 0
    assert Run(run.path).read_json("summary.json")["test_acc"] > 0.3


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_default_threads_follow_the_cores_the_process_may_use():
    """Pinned to one core (taskset, a container's cpuset), a run uses one thread, not the
    machine's count: two studies side by side then do not fight over each core."""
    code = (
        "import os, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from visionbench.engine.device import seed_everything; "
        "seed_everything(0, torch.device('cpu')); print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
