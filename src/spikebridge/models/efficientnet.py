"""A small EfficientNet-style CNN (Tan & Le 2019) for quick CPU runs on 28x28 images.

MBConv blocks as in EfficientNet-B0: a 1x1 expansion conv (left out when the expansion is 1),
a depthwise conv, squeeze-excitation x·σ(W₂·SiLU(W₁·pool(x))) (1x1 convs on the pooled map,
squeezed to a quarter of the block's input channels) and a 1x1 linear projection, each conv
followed by BatchNorm; SiLU after the expansion and the depthwise conv; a residual add where
stride 1 and the channel counts match. Stem conv, five MBConv blocks, a 1x1 head conv, global
average pooling and a linear classifier.

In the SNN every SiLU and sigmoid is a quantized site (docs/methods.md §8), pooling and
convolutions run on spike trains, and the excitation product x·σ(...) — a product of two
trains — is computed on decoded values (an analog op).
"""
from __future__ import annotations

from torch import nn

# (expansion, output channels, first stride) per block, after a 16-channel stem at stride 1
_CFG = [(1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 40, 2), (4, 40, 1)]


def _conv_bn(cin, cout, k, stride=1, groups=1, activation=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.SiLU()) if activation else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """x · σ(W₂·SiLU(W₁·avgpool(x)))."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.activation = nn.SiLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.activation(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """1x1 expand (SiLU) – depthwise k×k (SiLU) – squeeze-excitation – 1x1 project; residual
    add when the shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int = 3):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, kernel, stride, groups=hidden),
                   SqueezeExcitation(hidden, max(1, cin // 4)),
                   _conv_bn(hidden, cout, 1, activation=False)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_residual else out


class EfficientNetTiny(nn.Module):
    """Stem 3x3 (16 channels) – MBConv ×5 (16, 24, 24, 40, 40 channels; 28→14→7) – 1x1 head
    conv (``head`` channels, SiLU) – global average pooling – dropout – linear. ``width``
    scales every channel count."""

    def __init__(self, num_classes=10, in_channels=3, width=1.0, head=128, dropout=0.0):
        super().__init__()
        def scaled(c):
            return max(8, int(round(c * width)))
        c = scaled(16)
        layers = [_conv_bn(in_channels, c, 3)]
        for expand, out, stride in _CFG:
            layers.append(MBConv(c, scaled(out), stride, expand))
            c = scaled(out)
        layers.append(_conv_bn(c, head, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def efficientnet_tiny(num_classes=10, in_channels=3, width=1.0, head=128, dropout=0.0):
    """The small EfficientNet of the benchmarks: 5 MBConv blocks with SiLU and
    squeeze-excitation, for 28x28 (any size works)."""
    return EfficientNetTiny(num_classes, in_channels, width, head, dropout)
