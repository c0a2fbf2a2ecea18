"""A small CNN for quick CPU runs on 28x28 (or any size) inputs."""
from torch import nn


class SmallCNN(nn.Module):
    """conv(w)-conv(w)-pool-conv(2w)-pool, each conv3x3-BN-ReLU, then adaptive avg pool to
    4x4 and Linear(32w, 128)-ReLU-Linear(128, classes). Any input size of 4x4 or more works."""

    def __init__(self, num_classes=10, in_channels=3, width=32):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width), *block(width, width), nn.AvgPool2d(2),
            *block(width, 2 * width), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(nn.Linear(2 * width * 16, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
