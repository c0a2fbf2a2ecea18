"""Tensors made from the input's shape (graph.shape_numbers_as_literals): with an example input
(calibration data or input_shape) they are computed at conversion, as Constants, where they do
not depend on the batch size; otherwise they stay refused."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge import ConversionError

X = torch.randn(6, 2, 6, 8, dtype=torch.float64)


def grid(rows: int, cols: int) -> torch.Tensor:
    """A position grid from two sizes, a function the model wraps for torch.fx (timm's
    _build_grid): a graph node, on numbers alone."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, cols), indexing="ij")
    return torch.stack([ys, xs]).repeat(2, 1, 1)[None].double()


torch.fx.wrap("grid")


def fourier_positions(h: torch.Tensor) -> torch.Tensor:
    """xcit's encoding, small: sin and cos of the row and column indices over their count."""
    _, C, H, W = h.shape
    rows = torch.arange(1, H + 1, dtype=h.dtype, device=h.device).unsqueeze(1).repeat(1, W) / H
    cols = torch.arange(1, W + 1, dtype=h.dtype, device=h.device).repeat(H, 1) / W
    scales = torch.arange(C // 2, dtype=h.dtype, device=h.device) + 1
    angles = torch.cat([rows[None] * scales[:, None, None], cols[None] * scales[:, None, None]])
    return torch.cat([angles[0::2].sin(), angles[1::2].cos()])[None]


class Positioned(nn.Module):
    """conv → ReLU → + position encoding(shape) → conv → ReLU → pool → linear."""

    def __init__(self, encoding):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Linear(4, 3)
        self.encoding = encoding

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h + self.encoding(h)))
        return self.fc(h.mean((2, 3)))


def qann(encoding):
    torch.manual_seed(0)
    return sb.prepare(Positioned(encoding), levels=4, threshold=1.0).double().eval()


def test_a_position_encoding_of_the_shape_is_a_constant_and_exact_with_an_input_shape():
    model = qann(fourier_positions)
    with pytest.raises(ConversionError, match="unsupported node 'arange"):
        sb.convert(model, "pasc")  # no example: the numbers are the input's, unknown here
    for method in ("pasc", "bitplane"):
        snn = sb.convert(model, method, input_shape=X.shape[1:]).double()
        report = sb.verify(model, snn, X)
        assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


def test_a_relu_model_with_one_converts_with_its_calibration_data():
    torch.manual_seed(0)
    model = Positioned(fourier_positions).double().eval()
    snn = sb.convert(model, "percentile", T=8, calibration_data=[X])
    assert snn(X).shape == (6, 3)


def batch_sized(h: torch.Tensor) -> torch.Tensor:
    """EdgeNeXt's mask: made with the batch size, so not a constant."""
    return torch.zeros(h.shape[:1] + (1,) + h.shape[2:], dtype=h.dtype).cumsum(2)


def random_rows(h: torch.Tensor) -> torch.Tensor:
    return torch.rand(h.shape[2:], dtype=h.dtype)


def wrapped_grid(h: torch.Tensor) -> torch.Tensor:
    return grid(h.shape[2], h.shape[3])


def test_a_wrapped_function_of_sizes_is_a_constant_with_an_input_shape():
    model = qann(wrapped_grid)
    with pytest.raises(ConversionError, match="unsupported node 'grid"):
        sb.convert(model, "pasc")
    report = sb.verify(model, sb.convert(model, "pasc", input_shape=X.shape[1:]).double(), X)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


@pytest.mark.parametrize("encoding, node", [(batch_sized, "zeros"), (random_rows, "rand")])
def test_a_tensor_of_the_batch_size_or_of_chance_stays_refused(encoding, node):
    with pytest.raises(ConversionError, match=f"node '{node}"):
        sb.convert(qann(encoding), "pasc", input_shape=X.shape[1:])


def test_numbers_alone_make_a_constant_with_an_input_shape():
    body = lambda h: torch.add(h.size(1), 1) * torch.ones(1, dtype=h.dtype)  # noqa: E731  a 5, as a tensor
    model = qann(body)
    report = sb.verify(model, sb.convert(model, "pasc", input_shape=X.shape[1:]).double(), X)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0
