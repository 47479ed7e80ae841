"""Our own CNNs: write-up 002's 62,006-parameter network and its 4,746,186-parameter dropout
network, a fast MNIST-sized net, and a from-scratch CNN whose depth and width are parameters."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import VisionbenchError
from .registry import register_model


class SimpleCNN(nn.Module):
    """Two 5x5 convs with leaky ReLU and max-pool, then hidden linear layers -> classes.

    With the default widths (6, 16 channels; 120 -> 84 hidden) on 3x32x32 with 10 classes this
    is exactly 62,006 parameters (write-up 002); other input shapes change only the first linear
    layer's width.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 32,
        dropout: float = 0.0,
        conv_dropout: float = 0.0,
        convs: tuple[int, int] = (6, 16),
        hidden: tuple[int, ...] = (120, 84),
    ):
        super().__init__()
        side = ((img_size - 4) // 2 - 4) // 2
        if side < 1:
            raise VisionbenchError(
                f"simple_cnn needs inputs of at least 14 px, got {img_size}",
                fix="add model.input_size=32 (inputs are resized on the device; works for every dataset), "
                "or choose another model",
            )
        act = nn.LeakyReLU()
        c1, c2 = convs
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, 5),
            act,
            nn.MaxPool2d(2),
            nn.Dropout(conv_dropout),
            nn.Conv2d(c1, c2, 5),
            act,
            nn.MaxPool2d(2),
            nn.Dropout(conv_dropout),
            nn.Flatten(),
        )
        # dropout after the first hidden layer only: the module indices of the 62,006-parameter
        # network (and so its saved weights' names) stay as they were
        layers, width = [nn.Linear(c2 * side * side, hidden[0]), act, nn.Dropout(dropout)], hidden[0]
        for h in hidden[1:]:
            layers += [nn.Linear(width, h), act]
            width = h
        self.classifier = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def conv_block(cin: int, cout: int, pool: bool, bn: bool = True) -> nn.Sequential:
    """conv -> (max-pool) -> BN -> ReLU: pooling before BN and ReLU does their work on a quarter
    of the pixels (as airbench does); measured 1.3x faster per step on 2 CPU cores. Without BN
    the conv keeps its bias (conv -> pool -> ReLU equals conv -> ReLU -> pool: both monotone)."""
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=not bn)]
    layers += [nn.MaxPool2d(2)] if pool else []
    layers += [nn.BatchNorm2d(cout)] if bn else []
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv blocks (width w, 2w, 4w), global max-pool and a linear head.

    Sized for speed on a CPU: ~2M multiply-adds per 28x28 image at width 16, a sixth of the
    classic PyTorch MNIST example's network, yet ~99% on MNIST after one epoch.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 16, dropout: float = 0.0):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_block(in_chans, w, pool=True),
            conv_block(w, 2 * w, pool=True),
            conv_block(2 * w, 4 * w, pool=False),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ScratchCNN(nn.Module):
    """`depth` conv blocks doubling the width from `width`, pooling while the map is larger
    than 4x4, then global average pooling and a linear head."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        img_size: int,
        depth: int,
        width: int,
        dropout: float,
        bn: bool = True,
    ):
        super().__init__()
        blocks, c, side = [], in_chans, img_size
        for i in range(depth):
            pool = side > 4
            blocks.append(conv_block(c, width * 2**i, pool, bn))
            c, side = width * 2**i, side // 2 if pool else side
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model
def simple_cnn(num_classes: int, in_chans: int = 3, img_size: int = 32, dropout: float = 0.0) -> nn.Module:
    """Write-up 002's CIFAR network: 62,006 parameters on 3x32x32."""
    return SimpleCNN(num_classes, in_chans, img_size, dropout)


@register_model
def cnn_dropout(num_classes: int, in_chans: int = 3, img_size: int = 32, rate: float = 0.25) -> nn.Module:
    """Write-up 002's dropout network: 4,746,186 parameters on 3x32x32, dropout at `rate` after
    each conv block and the hidden layer. The write-up gives only its count; this is the simple
    CNN's own description ("two convolutional layers and one hidden linear layer", 5x5 convs,
    leaky ReLU, max-pool) widened to it: 184 and 192 channels, 800 hidden units, which make
    4,746,186 exactly (a search over this shape found no rounder widths that do)."""
    return SimpleCNN(num_classes, in_chans, img_size, rate, rate, convs=(184, 192), hidden=(800,))


@register_model
def small_cnn(num_classes: int, in_chans: int = 1, dropout: float = 0.0, width: int = 16) -> nn.Module:
    """Three conv blocks, ~2M multiply-adds on 28x28: built for CPU speed."""
    return SmallCNN(num_classes, in_chans, width, dropout)


@register_model
def scratch_cnn(
    num_classes: int,
    in_chans: int = 3,
    img_size: int = 32,
    depth: int = 3,
    width: int = 32,
    dropout: float = 0.0,
    bn: bool = True,
) -> nn.Module:
    """A CNN to train from scratch, its depth and width as parameters, BatchNorm optional
    (write-up 004's simple one has none; its complex and medium ones do)."""
    if depth < 1 or width < 1:
        raise VisionbenchError(
            "scratch_cnn needs depth >= 1 and width >= 1", fix="e.g. model.kwargs={depth: 3, width: 32}"
        )
    return ScratchCNN(num_classes, in_chans, img_size, depth, width, dropout, bn)
