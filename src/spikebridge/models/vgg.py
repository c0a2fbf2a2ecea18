"""VGG-style plain networks: CIFAR VGG-16 as in the QCFS code (average pooling), and a small
configurable VGG for quick CPU runs (width, BatchNorm or not, average or max pooling)."""
import torch
from torch import nn

_CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    """13 conv3x3-BN-ReLU layers, AvgPool2d(2) between stages, 3-layer classifier.

    Designed for 32x32 inputs (five poolings leave 1x1x512). Conv biases are omitted
    because every conv is followed by BatchNorm.
    """

    def __init__(self, num_classes=10, in_channels=3, dropout=0.5):
        super().__init__()
        layers, c = [], in_channels
        for v in _CFG16:
            if v == "M":
                layers.append(nn.AvgPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class VGGSmall(nn.Module):
    """Three stages of ``convs`` conv3x3-(BN)-ReLU layers (width w, 2w, 4w), each followed by a
    2x2 pooling, then adaptive average pooling to 2x2 and Linear(16w, 128)-ReLU-Linear(128,
    classes). Any input of 8x8 or more works.

    batchnorm=False gives conv layers with biases and no BatchNorm; pool="max" uses max
    pooling, which the rate-coded methods convert as it is (docs/methods.md §8) and
    ``sb.with_average_pooling`` swaps for average pooling over the same windows.
    """

    def __init__(self, num_classes=10, in_channels=3, width=8, convs=2, batchnorm=True, pool="avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        layers, c = [], in_channels
        for stage in range(3):
            for _ in range(convs):
                out = width * 2 ** stage
                layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm))
                layers += [nn.BatchNorm2d(out)] if batchnorm else []
                layers.append(nn.ReLU(inplace=True))
                c = out
            layers.append(nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
        layers.append(nn.AdaptiveAvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(4 * c, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))
