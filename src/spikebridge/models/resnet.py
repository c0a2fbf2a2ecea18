"""CIFAR-style ResNets: ResNet-18/34 (64..512 channels) and ResNet-20 (16/32/64 channels).

All use a 3x3 stride-1 stem (``stem_pool``: followed by torchvision's 3x3 stride-2 max
pooling), BasicBlocks, a global average pool and a linear classifier. Downsampling shortcuts
are 1x1 conv + BN (option B), which the converter handles as ordinary conv layers; He et al.'s ResNet-20 used zero-padding
(option A) instead, which has 0.27M parameters against 0.272M here.
"""
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1 conv-BN shortcut, then ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3 (stride ``stem_stride``, 1 in the papers; ``stem_pool``: then a 3x3 stride-2
    max pooling, as torchvision's ResNets) - stages of BasicBlocks - global avg pool - linear."""

    def __init__(self, blocks, widths, num_classes=10, in_channels=3, stem_stride=1, stem_pool=False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else None
        stages, c = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(BasicBlock(c, w, stride if j == 0 else 1))
                c = w
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layers(x)
        return self.fc(self.pool(x).flatten(1))


def resnet18(num_classes=10, in_channels=3):
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2], widths 64-512."""
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels)


def resnet34(num_classes=10, in_channels=3):
    """CIFAR ResNet-34: BasicBlocks [3, 4, 6, 3], widths 64-512."""
    return CifarResNet([3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_channels)


def resnet20(num_classes=10, in_channels=3, width=16, stem_stride=1, stem_pool=False):
    """CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 BasicBlocks, widths w/2w/4w (16/32/64
    in the paper); stem_stride=2 or stem_pool=True (a max pooling after the stem) halves every
    feature map (4x fewer MACs) for quick runs."""
    return CifarResNet([3, 3, 3], [width, 2 * width, 4 * width], num_classes, in_channels, stem_stride, stem_pool)
