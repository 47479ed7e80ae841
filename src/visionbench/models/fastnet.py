"""`fastnet`: our network for CIFAR-sized images in minutes, after airbench94 (Jordan, 2024).

A whitening layer (2x2 filters set from the training images' patch covariance, not learned),
then three conv groups (conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU) and a max-pool
head with scaled logits. Each trick is named where it is used. The training pieces that make it
fast live in the `fast` recipe: Nesterov SGD at batch 1024 with a 64x learning rate on the BN
biases, label smoothing 0.2, Lookahead (engine/ema.py), alternating flips and 2-px translations
(data/loader.py), and flip + translate test-time augmentation (engine/tta.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

from ..errors import VisionbenchError
from .registry import register_model

WHITEN_SIZE = 2  # 2x2 patches: 12 dimensions for RGB, whitened by 24 filters (each eigvector +-)


class Conv(nn.Conv2d):
    """3x3 'same' conv without bias whose first in_channels filters start as the identity
    (Dirac): at init each group passes its input through, which trains faster (airbench)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[: w.size(1)])


def batch_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BN with its scale frozen at 1 (only the bias trains: the scale is redundant before a
    conv and only slows the optimizer) and a tiny eps."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=1 - momentum)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bn_momentum: float):
        super().__init__()
        self.conv1, self.pool = Conv(cin, cout), nn.MaxPool2d(2)
        self.norm1, self.conv2 = batch_norm(cout, bn_momentum), Conv(cout, cout)
        self.norm2, self.act = batch_norm(cout, bn_momentum), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # pool before BN: 4x less BN work
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (64, 256, 256),
        bn_momentum: float = 0.6,
        logit_scale: float = 1 / 9,
        whiten_bias_epochs: int = 3,
    ):
        super().__init__()
        width = 2 * in_chans * WHITEN_SIZE**2
        self.whiten = nn.Conv2d(in_chans, width, WHITEN_SIZE, padding=0)
        self.whiten.weight.requires_grad_(False)  # set from the data (init_from_data), never trained
        nn.init.zeros_(self.whiten.bias)
        groups, cin = [], width
        for w in widths:
            groups.append(ConvGroup(cin, w, bn_momentum))
            cin = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)  # 3x3 -> 1 at 32 px, as airbench's MaxPool2d(3)
        self.fc = nn.Linear(cin, num_classes, bias=False)
        self.logit_scale = logit_scale  # 1/9: scaled logits train better with a plain linear head
        self.whiten_bias_epochs = whiten_bias_epochs
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.fc(self.pool(x).flatten(1)) * self.logit_scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor | Iterable[torch.Tensor], eps: float = 5e-4) -> None:
        """Whitening: the first layer's filters are the eigenvectors of the covariance of all
        2x2 patches of `images` (normalised, N x C x H x W, or batches of them), scaled by
        1/sqrt(eigenvalue), and their negatives (GELU then keeps both signs)."""
        c, k = self.whiten.in_channels, WHITEN_SIZE
        moment, count = 0, 0  # the patches' second moment, summed batch by batch in float64
        for x in [images] if isinstance(images, torch.Tensor) else images:
            patches = x.float().unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, c * k * k)
            moment, count = moment + patches.T.double() @ patches.double(), count + len(patches)
        values, vectors = torch.linalg.eigh(moment / count)  # ascending; the largest first below
        filters = (vectors.T.flip(0) / torch.sqrt(values.flip(0) + eps).view(-1, 1)).reshape(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat((filters, -filters)).to(self.whiten.weight))

    def start_epoch(self, epoch: int) -> None:
        """The whitening bias trains for the first epochs only, then stays (airbench: +0.1 pt)."""
        self.whiten.bias.requires_grad_(epoch < self.whiten_bias_epochs)


@register_model
def fastnet(
    num_classes: int = 10,
    in_chans: int = 3,
    img_size: int = 32,
    widths: tuple[int, int, int] | list[int] = (64, 256, 256),
    whiten_bias_epochs: int = 3,
) -> nn.Module:
    """airbench94-shaped CIFAR network (1.97M params at the default widths): whitening, three
    conv groups, max-pool head; the `fast` recipe trains it."""
    if img_size < 9:  # the whitening's 2x2 and three 2x pools leave nothing of smaller inputs
        raise VisionbenchError(
            f"fastnet needs inputs of at least 9 px, got {img_size}",
            fix="add model.input_size=32 (inputs are resized on the device)",
        )
    return FastNet(num_classes, in_chans, tuple(widths), whiten_bias_epochs=whiten_bias_epochs)
