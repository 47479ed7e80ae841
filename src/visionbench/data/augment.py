"""Per-sample augmentation of whole batches on the device: RandomResizedCrop, rotation, RandAugment,
TrivialAugment, colour jitter, Random Erasing, Cutout, Mixup and CutMix.

Every image draws its own parameters, yet a batch is a handful of tensor ops: geometric ops become
one affine matrix per image and a single `grid_sample`; colour ops are blends with a per-image
factor that is 1 (identity) for images that did not draw them, so nothing branches on data and
nothing synchronises the GPU. All randomness comes from the generators handed in, which the loader
seeds by (seed, epoch, batch): any batch is reproducible, so resume stays exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugConfig

# RandAugment's ops (Cubuk et al., 2020) and their strength at magnitude 10, as in torchvision;
# TrivialAugment (Müller & Hutter, 2021) uses the same ops with its "wide" ranges
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color")
OPS += ("contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
RANGES = {"shear": 0.3, "translate": 0.45, "rotate": 30.0, "enhance": 0.9, "posterize": 4, "solarize": 1.0}
WIDE = {"shear": 0.99, "translate": 1.0, "rotate": 135.0, "enhance": 0.99, "posterize": 6, "solarize": 1.0}
GRAY = (0.299, 0.587, 0.114)


def batch_generators(seed: int, epoch: int, batch: int, device: torch.device):
    """(torch generator on `device`, numpy generator) for one batch, both from (seed, epoch, batch)."""
    state = np.random.SeedSequence([seed % 2**63, epoch, batch]).generate_state(2, np.uint64)
    g = torch.Generator(device=device).manual_seed(int(state[0] >> 1))
    return g, np.random.default_rng(int(state[1]))


def uniform(g: torch.Generator, n: int, lo, hi) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: other + factor * (x - other), factor per image (1 leaves x as is)."""
    return other + factor.view(-1, 1, 1, 1) * (x - other)


def adjust_colour(x: torch.Tensor, bright, contrast, saturation, sharpness=None) -> torch.Tensor:
    """The four enhance ops, each with a per-image factor, on 0..255 pixels."""
    x = blend(x, torch.zeros_like(x), bright)
    x = blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), contrast)
    x = blend(x, grayscale(x).expand_as(x), saturation)
    if sharpness is not None:  # against PIL's 3x3 smoothing filter
        c = x.shape[1]
        k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
        smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
        x = blend(x, smooth, sharpness)
    return x


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Hue shift by a per-image fraction of a turn: a rotation of the chroma plane in YIQ."""
    if x.shape[1] != 3:
        return x
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device
    )
    c, s = torch.cos(2 * math.pi * turns), torch.sin(2 * math.pi * turns)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    rot = torch.stack([one, zero, zero, zero, c, -s, zero, s, c], 1).view(-1, 3, 3)
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def affine(x: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Warp each image by its own 3x3 matrix (output pixel -> input pixel, in pixels from the
    centre); bilinear, zeros outside. An identity matrix reads every pixel back exactly."""
    _, _, h, w = x.shape
    to_norm = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], device=x.device))
    to_pix = torch.diag(torch.tensor([w / 2, h / 2, 1.0], device=x.device))
    theta = (to_norm @ mats @ to_pix)[:, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def eye(n: int, device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(n, 3, 3).clone()


def rotation(degrees: torch.Tensor) -> torch.Tensor:
    m = eye(len(degrees), degrees.device)
    r = torch.deg2rad(degrees)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = r.cos(), -r.sin(), r.sin(), r.cos()
    return m


def resized_crop(g: torch.Tensor, n: int, h: int, w: int, min_area: float) -> torch.Tensor:
    """RandomResizedCrop (Szegedy et al.): area U[min_area, 1], aspect log-U[3/4, 4/3], anywhere
    inside the image, stretched back to (h, w). Returned as output -> input matrices."""
    area = uniform(g, n, min_area, 1.0) * h * w
    ratio = torch.exp(uniform(g, n, math.log(3 / 4), math.log(4 / 3)))
    cw = torch.sqrt(area * ratio).clamp(max=w)
    ch = torch.sqrt(area / ratio).clamp(max=h)
    m = eye(n, g.device)
    m[:, 0, 0], m[:, 1, 1] = cw / w, ch / h
    m[:, 0, 2] = (torch.rand(n, generator=g, device=g.device) - 0.5) * (w - cw)
    m[:, 1, 2] = (torch.rand(n, generator=g, device=g.device) - 0.5) * (h - ch)
    return m


def policy_round(x: torch.Tensor, g: torch.Generator, mag: torch.Tensor, ranges: dict) -> torch.Tensor:
    """One RandAugment/TrivialAugment op per image: `mag` in [0, 1] per image."""
    n, _, h, w = x.shape
    op = torch.randint(len(OPS), (n,), generator=g, device=x.device)
    sign = torch.where(torch.rand(n, generator=g, device=x.device) < 0.5, -1.0, 1.0)
    picked = {name: op == i for i, name in enumerate(OPS)}
    signed = mag * sign
    m = eye(n, x.device)
    m[:, 0, 1] = torch.where(picked["shear_x"], signed * ranges["shear"], 0.0)
    m[:, 1, 0] = torch.where(picked["shear_y"], signed * ranges["shear"], 0.0)
    m[:, 0, 2] = torch.where(picked["translate_x"], signed * ranges["translate"] * w, 0.0)
    m[:, 1, 2] = torch.where(picked["translate_y"], signed * ranges["translate"] * h, 0.0)
    m = m @ rotation(torch.where(picked["rotate"], signed * ranges["rotate"], 0.0))
    x = affine(x, m)
    factor = lambda name: torch.where(picked[name], 1 + signed * ranges["enhance"], 1.0)
    x = adjust_colour(x, factor("brightness"), factor("contrast"), factor("color"), factor("sharpness"))
    x = x.clamp(0, 255)
    bits = torch.where(picked["posterize"], 8 - torch.round(mag * ranges["posterize"]), 8.0)
    step = (2 ** (8 - bits)).view(-1, 1, 1, 1)
    x = torch.floor(x / step) * step
    threshold = torch.where(picked["solarize"], 256 * (1 - mag * ranges["solarize"]), 256.0)
    x = torch.where(x >= threshold.view(-1, 1, 1, 1), 255 - x, x)
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    stretched = torch.where(hi > lo, (x - lo) * 255 / (hi - lo).clamp(min=1e-6), x)
    x = torch.where(picked["autocontrast"].view(-1, 1, 1, 1), stretched, x)
    from torchvision.transforms.v2.functional import equalize  # per image, batched, on uint8

    eq = equalize(x.round().to(torch.uint8)).float()
    return torch.where(picked["equalize"].view(-1, 1, 1, 1), eq, x)


def box_mask(top, left, bh, bw, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) True inside each image's box; boxes may run off the edge."""
    rows = torch.arange(h, device=top.device).view(1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + bh).view(-1, 1, 1))
    inside = inside & (cols >= left.view(-1, 1, 1)) & (cols < (left + bw).view(-1, 1, 1))
    return inside.unsqueeze(1)


class Augment:
    """The per-sample augmentations an AugConfig asks for (crop padding and flip stay in the
    loader). `pixels` works on 0..255 values before normalisation; `batch` after it."""

    def __init__(self, cfg: AugConfig, num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes

    @staticmethod
    def wanted(cfg: AugConfig) -> bool:
        knobs = (
            cfg.resized_crop,
            cfg.rotate,
            cfg.jitter,
            cfg.hue,
            cfg.erase,
            cfg.cutout,
            cfg.mixup,
            cfg.cutmix,
        )
        return cfg.policy != "none" or any(knobs)

    def pixels(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg, (n, _, h, w) = self.cfg, x.shape
        if cfg.resized_crop or cfg.rotate:
            m = resized_crop(g, n, h, w, cfg.resized_crop) if cfg.resized_crop else eye(n, x.device)
            if cfg.rotate:
                m = m @ rotation(uniform(g, n, -cfg.rotate, cfg.rotate))
            x = affine(x, m)
        if cfg.policy == "randaugment":  # magnitude m/10 with per-image noise, as timm's rand-m9-mstd0.5
            for _ in range(cfg.ops):
                noise = torch.randn(n, generator=g, device=x.device) * cfg.magnitude_std
                x = policy_round(x, g, ((cfg.magnitude + noise) / 10).clamp(0, 1), RANGES)
        elif cfg.policy == "trivialaugment":
            x = policy_round(x, g, torch.rand(n, generator=g, device=x.device), WIDE)
        if cfg.jitter:
            j = cfg.jitter
            x = adjust_colour(x, *(uniform(g, n, max(0.0, 1 - j), 1 + j) for _ in range(3)))
        if cfg.hue:
            x = rotate_hue(x, uniform(g, n, -cfg.hue, cfg.hue))
        return x.clamp(0, 255)

    def batch(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator, rng: np.random.Generator):
        """Erasing and Cutout (the erased pixels become 0: the channel mean after normalisation),
        then Mixup or CutMix, which turn the labels into soft targets (B, K)."""
        cfg, (n, _, h, w) = self.cfg, x.shape
        if cfg.erase:  # Random Erasing (Zhong et al., 2020): area 2-33%, aspect 0.3-3.3
            area = uniform(g, n, 0.02, 1 / 3) * h * w
            ratio = torch.exp(uniform(g, n, math.log(0.3), math.log(1 / 0.3)))
            bh = torch.sqrt(area * ratio).round().clamp(1, h)
            bw = torch.sqrt(area / ratio).round().clamp(1, w)
            top = torch.floor(torch.rand(n, generator=g, device=x.device) * (h - bh + 1))
            left = torch.floor(torch.rand(n, generator=g, device=x.device) * (w - bw + 1))
            on = (torch.rand(n, generator=g, device=x.device) < cfg.erase).view(-1, 1, 1, 1)
            x = torch.where(on & box_mask(top, left, bh, bw, h, w), 0.0, x)
        if cfg.cutout:  # Cutout (DeVries & Taylor, 2017): centre anywhere, box may leave the image
            s = cfg.cutout
            cy = torch.randint(h, (n,), generator=g, device=x.device) - s // 2
            cx = torch.randint(w, (n,), generator=g, device=x.device) - s // 2
            side = torch.full((n,), s, device=x.device)
            x = torch.where(box_mask(cy, cx, side, side, h, w), 0.0, x)
        if (cfg.mixup or cfg.cutmix) and rng.random() < cfg.mix_prob:
            if cfg.cutmix > 0 and (cfg.mixup == 0 or rng.random() < 0.5):  # one or the other, as timm
                x, y = cutmix(x, y, rng, cfg.cutmix, self.num_classes)
            else:
                x, y = mixup(x, y, rng, cfg.mixup, self.num_classes)
        return x, y


def mix_targets(y: torch.Tensor, lam: float, num_classes: int) -> torch.Tensor:
    """lam of each image's own label, 1 - lam of its partner's (the batch reversed)."""
    one = F.one_hot(y, num_classes).float() if y.ndim == 1 else y
    return lam * one + (1 - lam) * one.flip(0)


def mixup(x, y, rng: np.random.Generator, alpha: float, num_classes: int):
    """Mixup (Zhang et al., 2018): one lam ~ Beta(alpha, alpha) per batch, pairs by reversal (timm's)."""
    lam = float(rng.beta(alpha, alpha))
    return x * lam + x.flip(0) * (1 - lam), mix_targets(y, lam, num_classes)


def cutmix(x, y, rng: np.random.Generator, alpha: float, num_classes: int):
    """CutMix (Yun et al., 2019): a box of the partner image pasted in; the target weight is the
    box's area after clipping to the image, not the lam drawn."""
    _, _, h, w = x.shape
    lam = float(rng.beta(alpha, alpha))
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
    kept = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, mix_targets(y, kept, num_classes)


def build_augment(cfg: AugConfig, num_classes: int) -> Augment | None:
    return Augment(cfg, num_classes) if Augment.wanted(cfg) else None
