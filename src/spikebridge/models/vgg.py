"""CIFAR-style VGG-16 as in the QCFS code, with average pooling."""
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
