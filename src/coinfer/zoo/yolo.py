"""Tiny YOLOv2 backbone (Redmon & Farhadi 2017, the VOC "tiny" configuration).

Nine 3×3 convolutions with batch norm and leaky ReLU, five stride-2 max-pools and one stride-1
pool, and a 1×1 detection head with 125 = 5 anchors × (20 classes + 5) channels. At 416×416
darknet reports 6.97 BFLOPs (= 3.49 GMACs), which this definition reproduces.
"""

from __future__ import annotations

from torch import nn

# Output channels of the 3×3 convolutions, in order; a max-pool follows each of the first six.
TINY_YOLO_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 1024)
# Leaky ReLU slope used throughout darknet.
LEAKY_SLOPE = 0.1
# 5 anchors × (20 VOC classes + 4 box coordinates + 1 objectness).
DETECTION_CHANNELS = 125


def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def tiny_yolov2() -> nn.Module:
    """Tiny YOLOv2 (VOC) detector backbone and head; input 1×3×416×416 → 1×125×13×13."""
    layers: list[nn.Module] = []
    in_ch = 3
    for i, out_ch in enumerate(TINY_YOLO_CHANNELS):
        layers.append(_conv(in_ch, out_ch))
        in_ch = out_ch
        if i < 5:
            layers.append(nn.MaxPool2d(2, 2))
        elif i == 5:
            # darknet's size-2 stride-1 pool keeps 13×13: pad one row/column on the far side.
            layers += [nn.ReplicationPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1)]
    layers.append(nn.Conv2d(in_ch, DETECTION_CHANNELS, 1))
    return nn.Sequential(*layers)
