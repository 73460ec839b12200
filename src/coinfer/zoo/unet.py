"""U-Net (Ronneberger et al. 2015) with padded convolutions: long skips across the whole net.

Every encoder level's output is kept until the matching decoder level concatenates it, so a
cut in the middle of the network carries up to five tensors — the hardest DAG in the zoo for
cut-size accounting.
"""

from __future__ import annotations

import torch
from torch import nn

# Channels per encoder level (the paper's 64 → 1024).
UNET_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024)


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Four down-sampling levels, a bottleneck, four up-sampling levels with skip concats."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        chans = UNET_CHANNELS
        self.down = nn.ModuleList()
        prev = in_channels
        for ch in chans:
            self.down.append(_double_conv(prev, ch))
            prev = ch
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for ch in reversed(chans[:-1]):
            self.up.append(nn.ConvTranspose2d(prev, ch, 2, stride=2))
            self.dec.append(_double_conv(2 * ch, ch))
            prev = ch
        self.head = nn.Conv2d(prev, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck output is not a skip
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def unet() -> nn.Module:
    """U-Net for 2-class segmentation; input sides must be divisible by 16 (default 224×224)."""
    return UNet()
