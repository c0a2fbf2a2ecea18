"""A small pre-activation network that both adds and concatenates feature maps: residual
blocks (He et al. 2016, identity mappings) and DenseNet layers (Huang et al. 2017)."""
import torch
from torch import nn


def _bn_relu_conv(cin, cout, k):
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))


class PreActBlock(nn.Module):
    """x + conv3x3(ReLU(BN(conv3x3(ReLU(BN(x))))))."""

    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(_bn_relu_conv(c, c, 3), _bn_relu_conv(c, c, 3))

    def forward(self, x):
        return x + self.body(x)


class DenseLayer(nn.Module):
    """cat([x, conv3x3(ReLU(BN(x)))]): ``growth`` new channels appended to the input."""

    def __init__(self, c, growth):
        super().__init__()
        self.body = _bn_relu_conv(c, growth, 3)

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class ResCatNet(nn.Module):
    """Stem conv3x3 (stride ``stem_stride``) to w channels; three stages, each a pre-activation
    residual block and ``dense`` DenseLayers (growth g), the first two ending in a transition
    (BN-ReLU-conv1x1 to 2x the stage width, then 2x2 average pooling); BN-ReLU, global average
    pooling, linear. BatchNorm sits after additions and concatenations, where no conv precedes
    it (conversion folds it into a depthwise 1x1 convolution)."""

    def __init__(self, num_classes=10, in_channels=3, width=12, growth=8, dense=2, stem_stride=1):
        super().__init__()
        layers, c = [nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False)], width
        for stage in range(3):
            layers.append(PreActBlock(c))
            for _ in range(dense):
                layers.append(DenseLayer(c, growth))
                c += growth
            if stage < 2:
                out = width * 2 ** (stage + 1)
                layers += [_bn_relu_conv(c, out, 1), nn.AvgPool2d(2)]
                c = out
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))
