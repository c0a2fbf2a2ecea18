"""Small real networks for end-to-end tests: Fashion-MNIST at 14x14, a seeded SGD loop, and the
levels a prepared model's sites compute."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.activations import FUNCTIONS
from spikebridge.data import get_dataset

# every f a quantized site may have: the fixed ones and the parametric ones at a few numbers
SITE_FUNCTIONS = sorted(FUNCTIONS) + ["leaky_relu(0.01)", "leaky_relu(0.2)", "elu(1.0)", "elu(0.5)", "celu(2.0)",
                                      "softplus(1.0, 20.0)", "softplus(2.0, 3.0)"]


def fashion_mnist_14x14(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images of a Fashion-MNIST split, average-pooled to 14x14 (fast on a CPU)."""
    ds = get_dataset("fashion-mnist", split)  # CI installs dataset-fashion-mnist
    xs, ys = zip(*(ds[i] for i in range(n)))
    return F.avg_pool2d(torch.stack(xs), 2), torch.tensor(ys)


def sgd_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
            weight_decay: float = 0.0, cosine: bool = False) -> nn.Module:
    """``steps`` SGD steps (momentum 0.9, optional cosine decay) on batches of 64 drawn from
    (x, y) by a generator seeded with 0; returns the model in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model.eval()


def small_relu_cnn(pool: type[nn.Module] = nn.AvgPool2d) -> nn.Module:
    """Two conv-BatchNorm-ReLU-``pool`` stages and a hidden layer of 32: 14x14 images, 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), pool(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), pool(2),
        nn.Flatten(), nn.Linear(16 * 9, 32), nn.ReLU(), nn.Linear(32, 10))


class Residual(nn.Module):
    """A ResNet-style ReLU network on 3x16x16 images, 5 classes. Two basic blocks: identity
    shortcuts (the shortcut computed before the convolution) and a strided one through a 1x1
    convolution (computed after it)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.short = nn.Conv2d(8, 16, 1, stride=2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.a2(torch.relu(self.a1(x))) + x)
        x = torch.relu(self.b2(torch.relu(self.b1(x))) + self.short(x))
        return self.fc(x.mean((2, 3)))


def trained_relu(make_net: Callable[[], nn.Module], calibration_batches: int, lr: float,
                 weight_decay: float = 0.0) -> dict:
    """A ReLU ANN (``make_net()`` after seeding 0) trained for 300 steps on 5k 14x14 Fashion-MNIST
    images; "calib": ``calibration_batches`` batches of 128 other training images, (x, y);
    "test": 2000 test images."""
    x, y = fashion_mnist_14x14("train", 5000 + 128 * calibration_batches)
    torch.manual_seed(0)
    ann = sgd_fit(make_net(), x[:5000], y[:5000], 300, lr=lr, weight_decay=weight_decay)
    calib = [(x[5000 + 128 * j:5000 + 128 * (j + 1)], y[5000 + 128 * j:5000 + 128 * (j + 1)])
             for j in range(calibration_batches)]
    return {"ann": ann, "calib": calib, "test": fashion_mnist_14x14("test", 2000)}


@torch.no_grad()
def site_levels(qann: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{site: the integer level of every neuron} of a prepared model on input x."""
    levels = {}
    hooks = [s.register_forward_hook(lambda m, i, o, n=n: levels.__setitem__(n, m.level(i[0])))
             for n, s in sb.sites(qann).items()]
    try:
        qann(x)
    finally:
        for h in hooks:
            h.remove()
    return levels
