"""GoogLeNet-style Inception network (Szegedy et al. 2015), batch-norm variant, no aux heads.

Each Inception module fans out into four branches that are concatenated: a cut inside a module
carries several tensors at once, the case that makes capture treat the model as a DAG.
"""

from __future__ import annotations

import torch
from torch import nn

# Inception module widths from Table 1 of the paper:
# (1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool proj); "M" = 3×3/2 max-pool between groups.
GOOGLENET_MODULES: tuple[tuple[int, int, int, int, int, int] | str, ...] = (
    (64, 96, 128, 16, 32, 32),  # 3a
    (128, 128, 192, 32, 96, 64),  # 3b
    "M",
    (192, 96, 208, 16, 48, 64),  # 4a
    (160, 112, 224, 24, 64, 64),  # 4b
    (128, 128, 256, 24, 64, 64),  # 4c
    (112, 144, 288, 32, 64, 64),  # 4d
    (256, 160, 320, 32, 128, 128),  # 4e
    "M",
    (256, 160, 320, 32, 128, 128),  # 5a
    (384, 192, 384, 48, 128, 128),  # 5b
)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch, eps=0.001),
        nn.ReLU(inplace=True),
    )


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated along channels (the "5×5" branch uses a 3×3, as torchvision)."""

    def __init__(self, in_ch: int, c1: int, r3: int, c3: int, r5: int, c5: int, pp: int) -> None:
        super().__init__()
        self.branch1 = _conv(in_ch, c1, 1)
        self.branch2 = nn.Sequential(_conv(in_ch, r3, 1), _conv(r3, c3, 3))
        self.branch3 = nn.Sequential(_conv(in_ch, r5, 1), _conv(r5, c5, 3))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _conv(in_ch, pp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """Stem, nine Inception modules, global pool, classifier (~1.5 GMACs, 6.6 M parameters)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv(3, 64, 7, 2),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            _conv(64, 64, 1),
            _conv(64, 192, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        blocks: list[nn.Module] = []
        in_ch = 192
        for spec in GOOGLENET_MODULES:
            if spec == "M":
                blocks.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                assert isinstance(spec, tuple)
                blocks.append(InceptionBlock(in_ch, *spec))
                in_ch = spec[0] + spec[2] + spec[4] + spec[5]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def inception(num_classes: int = 1000) -> nn.Module:
    """GoogLeNet (Inception v1) with batch norm at 224×224."""
    return GoogLeNet(num_classes)
