"""Tensors made from the input's shape (graph.shape_numbers_as_literals, shape_made_constants):
with an example input (calibration data or input_shape) they are computed at conversion, as
Constants, where they do not depend on the batch size or repeat one row per sample; otherwise
they stay refused."""
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


def batch_offsets(h: torch.Tensor) -> torch.Tensor:
    """Made with the batch size, and each sample's row differs: not a constant."""
    return torch.arange(h.shape[0], dtype=h.dtype).reshape(-1, 1, 1, 1)


def batch_stacked(h: torch.Tensor) -> torch.Tensor:
    """Rows that repeat, but read along the batch: one row in their place would give the first
    B rows of [mask row, h] (the same shape at the end, other values)."""
    return torch.cat([torch.ones(h.shape, dtype=h.dtype), h])[:h.shape[0]]


def random_rows(h: torch.Tensor) -> torch.Tensor:
    return torch.rand(h.shape[2:], dtype=h.dtype)


class FourierMask(nn.Module):
    """EdgeNeXt's position encoding, small: a mask of ones from torch.zeros(B, H, W), its running
    counts along rows and columns, their sines and cosines, a 1x1 conv projection, and a
    reshape to (B, −1, C) read by the tokens."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.projection = nn.Conv2d(4, channels, 1)

    def forward(self, h):
        B, C, H, W = h.shape
        mask = ~torch.zeros((B, H, W)).to(dtype=torch.bool)
        rows, cols = mask.cumsum(1, dtype=h.dtype) / H, mask.cumsum(2, dtype=h.dtype) / W
        pos = torch.stack([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1)
        tokens = h.flatten(2).transpose(1, 2)
        tokens = tokens + self.projection(pos).reshape(B, C, -1).transpose(1, 2)
        return tokens.transpose(1, 2).reshape(B, C, H, W)


def wrapped_grid(h: torch.Tensor) -> torch.Tensor:
    return grid(h.shape[2], h.shape[3])


def test_a_wrapped_function_of_sizes_is_a_constant_with_an_input_shape():
    model = qann(wrapped_grid)
    with pytest.raises(ConversionError, match="unsupported node 'grid"):
        sb.convert(model, "pasc")
    report = sb.verify(model, sb.convert(model, "pasc", input_shape=X.shape[1:]).double(), X)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


def random_repeated_rows(h: torch.Tensor) -> torch.Tensor:
    """One random row for every sample: rows that repeat, but another row at every call."""
    return torch.rand(1, h.shape[1], h.shape[2], h.shape[3], dtype=h.dtype).expand(h.shape[0], -1, -1, -1)


@pytest.mark.parametrize("encoding, node", [(batch_offsets, "arange"), (batch_stacked, "ones"),
                                            (random_rows, "rand"), (random_repeated_rows, "rand")])
def test_a_tensor_of_the_batch_size_whose_rows_differ_or_are_stacked_or_of_chance_stays_refused(encoding, node):
    with pytest.raises(ConversionError, match=f"node '{node}"):
        sb.convert(qann(encoding), "pasc", input_shape=X.shape[1:])


class Masked(Positioned):
    def __init__(self):
        super().__init__(None)
        self.encoding = FourierMask()

    def forward(self, x):
        h = F.relu(self.conv1(x))
        return self.fc(F.relu(self.conv2(self.encoding(h))).mean((2, 3)))


def test_a_tensor_of_the_batch_size_with_one_row_per_sample_is_a_constant_and_exact(tmp_path):
    torch.manual_seed(0)
    model = sb.prepare(Masked(), levels=4, threshold=1.0).double().eval()
    with pytest.raises(ConversionError, match="unsupported node 'zeros"):
        sb.convert(model, "pasc")  # no example
    for method in ("pasc", "bitplane"):
        snn = sb.convert(model, method, input_shape=X.shape[1:]).double()
        (constant,) = [m for n, m in snn.graph.named_modules() if n.startswith("constant_")]
        assert constant.shape == [1, 6 * 8, 4]  # one sample's row: (B, H·W, C) at B = 1
        assert "projection" not in dict(snn.graph.named_modules())  # computed here, not run
        for x in (X, X[:1], torch.randn(11, *X.shape[1:], dtype=torch.float64)):  # any batch size
            report = sb.verify(model, snn, x)
            assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0
    sb.save(snn, tmp_path / "masked.snn")
    torch.testing.assert_close(sb.load(tmp_path / "masked.snn")(X), snn(X), rtol=0, atol=0)


def test_numbers_alone_make_a_constant_with_an_input_shape():
    body = lambda h: torch.add(h.size(1), 1) * torch.ones(1, dtype=h.dtype)  # noqa: E731  a 5, as a tensor
    model = qann(body)
    report = sb.verify(model, sb.convert(model, "pasc", input_shape=X.shape[1:]).double(), X)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


class ActivatedPositions(nn.Module):
    """An activation of a position table made from the input's size (``arange(W)``), the module
    the 'module' variant calls or a function: it depends on no data of the input, so prepare
    makes it no site and conversion computes it with the example's shape."""

    def __init__(self, module: bool):
        super().__init__()
        self.act = nn.GELU() if module else torch.tanh

    def forward(self, h):
        return self.act(torch.arange(h.shape[3], dtype=h.dtype) / 4 - 1)


@pytest.mark.parametrize("module", [True, False])
def test_an_activation_of_a_tensor_of_the_shape_is_no_site_and_is_computed_at_conversion(module):
    torch.manual_seed(0)
    model = sb.prepare(Positioned(ActivatedPositions(module)), levels=4, threshold=1.0).double().eval()
    assert list(sb.sites(model)) == ["relu", "relu_1"]
    with pytest.raises(ConversionError, match="unsupported node 'arange"):
        sb.convert(model, "pasc")  # no example
    for method in ("pasc", "bitplane"):
        snn = sb.convert(model, method, input_shape=X.shape[1:]).double()
        assert sorted(snn.neurons()) == ["relu", "relu_1"]
        for x in (X, X[:1]):
            report = sb.verify(model, snn, x)
            assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0
