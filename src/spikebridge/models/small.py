"""A small CNN and an MLP for quick CPU runs on 28x28 (or any size) inputs."""
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


class MLP(nn.Module):
    """A multilayer perceptron: the image average-pooled to ``size`` x ``size`` (adaptive, so any
    input size works), flattened, ``depth`` Linear(hidden)-ReLU layers, then Linear(classes).
    No convolution and no BatchNorm: the plain network of early conversion work."""

    def __init__(self, num_classes=10, in_channels=3, hidden=256, depth=3, size=14):
        super().__init__()
        layers = [nn.AdaptiveAvgPool2d(size), nn.Flatten()]
        features = in_channels * size * size
        for _ in range(depth):
            layers += [nn.Linear(features, hidden), nn.ReLU(inplace=True)]
            features = hidden
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
