"""CIFAR-friendly MobileNetV2.

Differences from the ImageNet model: stride-1 stem and a stride-1 second stage, so 32x32
inputs end at 4x4; ReLU instead of ReLU6, because the upper clip of ReLU6 has no spiking
equivalent while QCFS already bounds each activation by its learned threshold.
"""
from torch import nn

# (expansion t, output channels c, repeats n, first stride s)
_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _make_divisible(v, divisor=8):
    """Round a channel count to a multiple of divisor, never below 90% of v."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; residual add when shapes match."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn_relu(cin, hidden, 1)]
        layers += [_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with ReLU, stride-1 stem, 1280-d head, global avg pool, dropout, linear.
    stem_stride=2 and a smaller last_channel make a quick CPU variant."""

    def __init__(self, num_classes=10, in_channels=3, width_mult=1.0, dropout=0.2, stem_stride=1, last_channel=1280):
        super().__init__()
        c = _make_divisible(32 * width_mult)
        last = _make_divisible(last_channel * max(1.0, width_mult))
        layers = [_conv_bn_relu(in_channels, c, 3, stem_stride)]
        for t, ch, n, s in _CFG:
            out = _make_divisible(ch * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(_conv_bn_relu(c, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))
