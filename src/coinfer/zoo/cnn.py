"""Plain feed-forward CNNs: AlexNet and VGG-16 (chains: every cut carries one tensor).

Written from the papers' layer tables (Krizhevsky et al. 2012 in the one-GPU variant popularised
by torchvision; Simonyan & Zisserman 2015, configuration D) so the MAC counts match the
published figures at 224×224.
"""

from __future__ import annotations

from torch import nn

# VGG-16 (configuration "D"): channel counts of the 3×3 convolutions, "M" = 2×2 max-pool.
VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def alexnet(num_classes: int = 1000) -> nn.Module:
    """AlexNet, one-tower variant (~0.71 GMACs, 61 M parameters at 224×224)."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    classifier = nn.Sequential(
        nn.Dropout(0.5),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    # The adaptive pool makes the classifier independent of the input size (6×6 at 224).
    return nn.Sequential(features, nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(1), classifier)


def vgg16(num_classes: int = 1000) -> nn.Module:
    """VGG-16 without batch norm (~15.5 GMACs, 138 M parameters at 224×224)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )
    return nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(1), classifier
    )
