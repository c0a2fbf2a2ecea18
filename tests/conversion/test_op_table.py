"""Contract tests of the op table: every entry, in every form it declares (module type,
function, method name), is exercised by a graph that uses it, and behaves as its kind says:
accepted ops convert and PASC stays exact in float64, dropped and folded ops leave the graph,
activations become sites, refused ops are refused with the entry's advice. Max pooling is kept
(``prepare(replace_maxpool=False)``) so that its entries are what the SNN runs."""
from __future__ import annotations

import math
import operator

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.activations import ReLUSquared
from spikebridge.ann.assignment import assigned
from spikebridge.ann.selections import max_pool2d_padded
from spikebridge import ConversionError, UnsupportedActivationError
from spikebridge.ann.tracing import trace
from spikebridge.conversion.constant import Constant
from spikebridge.conversion.graph import analog_nodes, ann_site_modules
from spikebridge.conversion.ops import CONDITIONAL, OPS, Kind, op_for_node
from torchvision.models import swin_transformer
from torchvision.ops import StochasticDepth, stochastic_depth


class Net(nn.Module):
    """conv → ReLU (a spike train) → ``body`` → flatten → linear, on 2-d (or 1-d) inputs.
    ``body(net, h, g)`` gets the train h and a second train g of the same shape."""

    def __init__(self, body, dims: int = 2, module: nn.Module | None = None):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.conv, self.conv2 = conv(2, 4, 3, padding=1), conv(2, 4, 3, padding=1)
        self.op = module if module is not None else nn.Identity()
        self.body = body
        self.fc = nn.LazyLinear(3)

    def forward(self, x):
        h, g = F.relu(self.conv(x)), F.relu(self.conv2(x))
        return self.fc(torch.flatten(self.body(self, h, g), 1))


def module_body(net, h, g):
    return net.op(h)


def with_tensors(net: Net, **tensors) -> Net:
    """``net`` holding parameters its body reads directly (get_attr in the traced graph)."""
    for name, value in tensors.items():
        setattr(net, name, nn.Parameter(value))
    return net


def with_buffers(net: Net, **tensors) -> Net:
    """``net`` holding (integer) buffers its body reads directly."""
    for name, value in tensors.items():
        net.register_buffer(name, value)
    return net


def assign_into(n, h, g):
    """MViTv2's form: a part of one train replaced by a function of another."""
    h = h * 1
    h[:, :, 2:, :3] = g[:, :, 2:, :3] * 2 - h[:, :, 2:, :3]
    return h


def tokens(h):
    """[B, 4, 8, 8] → [B, 32, 8]: a map as 32 tokens of width 8."""
    return h.flatten(1, 2)


# (entry name, form, example network, input shape); the form is the module type, function
# or method name the example must contain.
M2, M1 = (2, 8, 8), (2, 8)
# math on shapes becomes graph nodes where a model wraps it for torch.fx, as timm does
math_ceil, math_floor, math_trunc, math_sqrt = math.ceil, math.floor, math.trunc, math.sqrt
for _name in ("math_ceil", "math_floor", "math_trunc", "math_sqrt"):
    torch.fx.wrap(_name)
EXAMPLES = [
    ("conv", nn.Conv2d, Net(module_body), M2),
    ("conv", nn.Conv1d, Net(module_body, dims=1), M1),
    ("conv", nn.Conv3d, Net(lambda n, h, g: n.op(torch.stack([h, g], 2)),  # lambda layers' 3-d conv
                            module=nn.Conv3d(4, 3, (2, 3, 3), padding=(0, 1, 1))), M2),
    ("linear", nn.Linear, Net(module_body, module=nn.Linear(8, 8)), M2),
    ("conv_transpose", nn.ConvTranspose2d, Net(module_body, module=nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1,
                                                                                  output_padding=1)), M2),
    ("conv_transpose", nn.ConvTranspose1d, Net(module_body, 1, nn.ConvTranspose1d(4, 4, 2, stride=2, groups=2)), M1),
    ("avg_pool1d", nn.AvgPool1d, Net(module_body, 1, nn.AvgPool1d(2)), M1),
    ("avg_pool1d", F.avg_pool1d, Net(lambda n, h, g: F.avg_pool1d(h, 2), 1), M1),
    ("avg_pool2d", nn.AvgPool2d, Net(module_body, module=nn.AvgPool2d(2)), M2),
    ("avg_pool2d", F.avg_pool2d, Net(lambda n, h, g: F.avg_pool2d(h, 2)), M2),
    ("adaptive_avg_pool1d", nn.AdaptiveAvgPool1d, Net(module_body, 1, nn.AdaptiveAvgPool1d(2)), M1),
    ("adaptive_avg_pool1d", F.adaptive_avg_pool1d, Net(lambda n, h, g: F.adaptive_avg_pool1d(h, 2), 1), M1),
    ("adaptive_avg_pool2d", nn.AdaptiveAvgPool2d, Net(module_body, module=nn.AdaptiveAvgPool2d(2)), M2),
    ("adaptive_avg_pool2d", F.adaptive_avg_pool2d, Net(lambda n, h, g: F.adaptive_avg_pool2d(h, 2)), M2),
    ("upsample", nn.Upsample, Net(module_body, module=nn.Upsample(scale_factor=2)), M2),
    ("upsample", F.interpolate, Net(lambda n, h, g: F.interpolate(h, size=(11, 13), mode="bilinear")), M2),
    ("pad", F.pad, Net(lambda n, h, g: F.pad(h, (1, 2, 0, 1))), M2),
    ("pad", F.pad, Net(lambda n, h, g: F.pad(h, (2, 1), mode="reflect"), 1), M1),
    ("zero_pad", nn.ZeroPad1d, Net(module_body, 1, nn.ZeroPad1d((1, 2))), M1),
    ("zero_pad", nn.ZeroPad2d, Net(module_body, module=nn.ZeroPad2d((0, 1, 2, 1))), M2),
    ("edge_pad", nn.ReflectionPad1d, Net(module_body, 1, nn.ReflectionPad1d(2)), M1),
    ("edge_pad", nn.ReflectionPad2d, Net(module_body, module=nn.ReflectionPad2d((1, 0, 2, 1))), M2),
    ("edge_pad", nn.ReplicationPad1d, Net(module_body, 1, nn.ReplicationPad1d(1)), M1),
    ("edge_pad", nn.ReplicationPad2d, Net(module_body, module=nn.ReplicationPad2d(1)), M2),
    ("rearrange", torch.tile, Net(lambda n, h, g: torch.tile(h, (1, 2, 1))), M2),
    ("rearrange", "tile", Net(lambda n, h, g: h.tile(2)), M2),
    ("rearrange", "repeat", Net(lambda n, h, g: h.repeat(1, 1, 2, 1)), M2),
    ("rearrange", torch.repeat_interleave, Net(lambda n, h, g: torch.repeat_interleave(h, 2, dim=1)), M2),
    ("rearrange", "repeat_interleave", Net(lambda n, h, g: h.repeat_interleave(3, dim=-1)), M2),
    ("rearrange", torch.roll, Net(lambda n, h, g: torch.roll(h, (1, -2), (2, 3))), M2),
    ("rearrange", "roll", Net(lambda n, h, g: h.roll(3, -1)), M2),
    ("rearrange", torch.flip, Net(lambda n, h, g: torch.flip(h, (1, 3))), M2),
    ("rearrange", "flip", Net(lambda n, h, g: h.flip(-2)), M2),
    ("rearrange", "unfold", Net(lambda n, h, g: h.unfold(3, 3, 2)), M2),
    ("stack", torch.stack, Net(lambda n, h, g: torch.stack([h, g], 2)), M2),
    ("stack", torch.stack, Net(lambda n, h, g: torch.stack((h, g * 0.5), dim=-1)), M2),
    ("flatten", nn.Flatten, Net(module_body, module=nn.Flatten()), M2),
    ("flatten", torch.flatten, Net(lambda n, h, g: torch.flatten(h, 2)), M2),
    ("flatten", "flatten", Net(lambda n, h, g: h.flatten(2)), M2),
    ("unflatten", nn.Unflatten, Net(module_body, module=nn.Unflatten(1, (2, 2))), M2),
    ("reshape", torch.reshape, Net(lambda n, h, g: torch.reshape(h, (h.shape[0], -1))), M2),
    ("reshape", "view", Net(lambda n, h, g: h.view(h.size(0), 4, -1)), M2),
    ("reshape", "reshape", Net(lambda n, h, g: h.reshape(h.size(0), -1)), M2),
    ("reshape", "view_as", Net(lambda n, h, g: h.flatten(2).view_as(g)), M2),
    ("reshape", "reshape_as", Net(lambda n, h, g: h.transpose(2, 3).reshape_as(g)), M2),
    ("sum", torch.sum, Net(lambda n, h, g: torch.sum(h, (2, 3))), M2),
    ("sum", "sum", Net(lambda n, h, g: h.sum(-1, keepdim=True)), M2),
    ("identity", nn.Identity, Net(module_body), M2),
    ("identity", "contiguous", Net(lambda n, h, g: h.contiguous()), M2),
    ("mean", torch.mean, Net(lambda n, h, g: torch.mean(h, (2, 3))), M2),
    ("mean", "mean", Net(lambda n, h, g: h.mean(3)), M2),
    ("add", operator.add, Net(lambda n, h, g: h + g), M2),
    ("add", torch.add, Net(lambda n, h, g: torch.add(h, g)), M2),
    ("add", "add", Net(lambda n, h, g: h.add(g)), M2),
    ("add", "add_", Net(lambda n, h, g: h.add_(g)), M2),
    ("add", operator.add, Net(lambda n, h, g: h + 0.5), M2),
    ("add", torch.add, Net(lambda n, h, g: torch.add(h, g, alpha=-0.7)), M2),
    ("sub", operator.sub, Net(lambda n, h, g: h - g), M2),
    ("sub", operator.sub, Net(lambda n, h, g: 0.25 - h), M2),
    ("sub", torch.sub, Net(lambda n, h, g: torch.sub(h, 0.3, alpha=2)), M2),
    ("sub", torch.subtract, Net(lambda n, h, g: torch.subtract(h, g)), M2),
    ("sub", "sub", Net(lambda n, h, g: h.sub(g, alpha=0.5)), M2),
    ("sub", "sub_", Net(lambda n, h, g: h.sub_(0.2) + h), M2),  # h itself changed in place
    ("sub", "subtract", Net(lambda n, h, g: h.subtract(g)), M2),
    ("rsub", torch.rsub, Net(lambda n, h, g: torch.rsub(h, 1.5, alpha=3)), M2),
    ("mul", operator.mul, Net(lambda n, h, g: 2 * h + h * h.size(1)), M2),
    ("mul", torch.mul, Net(lambda n, h, g: torch.mul(h, -0.5)), M2),
    ("mul", torch.multiply, Net(lambda n, h, g: torch.multiply(h, 3)), M2),
    ("mul", "mul", Net(lambda n, h, g: h.mul(0.5)), M2),
    ("mul", "mul_", Net(lambda n, h, g: h.mul_(1.5)), M2),
    ("mul", "multiply", Net(lambda n, h, g: h.multiply(2)), M2),
    ("div", operator.truediv, Net(lambda n, h, g: h / 3), M2),
    ("div", torch.div, Net(lambda n, h, g: torch.div(h, 0.5)), M2),
    ("div", torch.divide, Net(lambda n, h, g: torch.divide(h, 4)), M2),
    ("div", torch.true_divide, Net(lambda n, h, g: torch.true_divide(h, 4)), M2),
    ("div", "div", Net(lambda n, h, g: h.div(3)), M2),
    ("div", "div_", Net(lambda n, h, g: h.div_(3)), M2),
    ("div", "divide", Net(lambda n, h, g: h.divide(3)), M2),
    ("div", "true_divide", Net(lambda n, h, g: h.true_divide(3)), M2),
    ("neg", operator.neg, Net(lambda n, h, g: -h + 1), M2),
    ("neg", torch.neg, Net(lambda n, h, g: torch.neg(h)), M2),
    ("neg", torch.negative, Net(lambda n, h, g: torch.negative(h)), M2),
    ("neg", "neg", Net(lambda n, h, g: h.neg()), M2),
    ("neg", "neg_", Net(lambda n, h, g: h.neg_()), M2),
    ("neg", "negative", Net(lambda n, h, g: h.negative()), M2),
    ("cat", torch.cat, Net(lambda n, h, g: torch.cat([h, g], 1)), M2),
    ("shape", getattr, Net(lambda n, h, g: h.view(h.shape[0], -1)), M2),
    ("shape", operator.getitem, Net(lambda n, h, g: h.view(h.shape[0], -1)), M2),
    ("shape", "size", Net(lambda n, h, g: h.view(h.size(0), -1)), M2),
    ("shape", operator.getitem, Net(lambda n, h, g: h[:, 1:] + h[0, :3]), M2),  # h[0]: the first sample
    ("shape", torch._assert, Net(lambda n, h, g: (torch._assert(h.dim() == 4, "4-d"), h)[1]), M2),
    ("shape", "dim", Net(lambda n, h, g: h.view(h.shape[0], 64 * h.dim())), M2),  # 4 channels of 8x8
    ("shape_math", math.ceil, Net(lambda n, h, g: h.view(h.shape[0], math_ceil(h.shape[1] / 3), -1)), M2),
    ("shape_math", math.floor, Net(lambda n, h, g: h.view(h.shape[0], math_floor(h.shape[1] / 3), -1)), M2),
    ("shape_math", math.trunc, Net(lambda n, h, g: h.view(h.shape[0], math_trunc(h.shape[1] / 3), -1)), M2),
    ("shape_math", math.sqrt, Net(lambda n, h, g: h * math_sqrt(h.shape[1])), M2),
    ("permute", torch.permute, Net(lambda n, h, g: torch.permute(h, (0, 1, 3, 2)) - g), M2),
    ("permute", "permute", Net(lambda n, h, g: h.permute(0, 2, 3, 1)), M2),
    ("transpose", torch.transpose, Net(lambda n, h, g: torch.transpose(h, 2, 3) + g), M2),
    ("transpose", "transpose", Net(lambda n, h, g: h.transpose(1, 3)), M2),
    ("transpose", torch.swapaxes, Net(lambda n, h, g: torch.swapaxes(h, 2, 3) - g), M2),
    ("transpose", torch.swapdims, Net(lambda n, h, g: torch.swapdims(h, 1, 2)), M2),
    ("transpose", "swapaxes", Net(lambda n, h, g: h.swapaxes(1, 2)), M2),
    ("transpose", "swapdims", Net(lambda n, h, g: h.swapdims(2, 3)), M2),
    ("expand", "expand", Net(lambda n, h, g: h[:, :1].expand(-1, 3, -1, -1)), M2),
    ("expand", "expand_as", Net(lambda n, h, g: h[:, :1].expand_as(g) - g), M2),
    ("unsqueeze", torch.unsqueeze, Net(lambda n, h, g: torch.unsqueeze(h, 1)), M2),
    ("unsqueeze", torch.squeeze, Net(lambda n, h, g: torch.squeeze(h[:, :1], 1)), M2),
    ("unsqueeze", "unsqueeze", Net(lambda n, h, g: h.unsqueeze(2)), M2),
    ("unsqueeze", "squeeze", Net(lambda n, h, g: h[:, 1:2].squeeze(1)), M2),
    ("unsqueeze", torch.atleast_3d, Net(lambda n, h, g: torch.atleast_3d(h.flatten(1)), 1), M1),
    ("rearrange", nn.Unfold, Net(module_body, module=nn.Unfold(3, padding=1, stride=2)), M2),  # TNT's pixel patches
    ("rearrange", F.unfold, Net(lambda n, h, g: F.unfold(h - g, 2, stride=2)), M2),
    # VOLO's outlook attention: patches of 3x3 with stride 1 overlap, and fold sums them back
    ("fold", nn.Fold, Net(lambda n, h, g: n.op(F.unfold(h - g, 3, padding=1)), module=nn.Fold((8, 8), 3, padding=1)),
     M2),
    ("fold", F.fold, Net(lambda n, h, g: F.fold(F.unfold(h, 2, stride=2) - F.unfold(g, 2, stride=2), (8, 8), 2,
                                                stride=2)), M2),
    ("cast", "to", Net(lambda n, h, g: h.to(dtype=g.dtype) - g.to("cpu")), M2),
    ("cast", "type_as", Net(lambda n, h, g: h.type_as(g) + g), M2),
    ("identity", "clone", Net(lambda n, h, g: h.clone() - g), M2),
    ("assigned", assigned, Net(assign_into), M2),
    ("cast", "double", Net(lambda n, h, g: (h.double() + g).to(g.dtype)), M2),
    ("narrowing_cast", "float", Net(lambda n, h, g: h.float().to(g.dtype) - g), M2),
    ("narrowing_cast", "half", Net(lambda n, h, g: h.half().to(g.dtype) + g), M2),
    ("narrowing_cast", "bfloat16", Net(lambda n, h, g: h.bfloat16().to(g.dtype) - g), M2),
    ("narrowing_cast", "to", Net(lambda n, h, g: h.to(torch.float32).to(g.dtype) - g), M2),
    ("narrowing_cast", "to", Net(lambda n, h, g: h.to(dtype=torch.float16).to(g.dtype) + g), M2),
    ("split", torch.chunk, Net(lambda n, h, g: torch.chunk(h, 2, 1)[1] - g[:, :2]), M2),
    ("split", torch.split, Net(lambda n, h, g: torch.split(h, [1, 3], 1)[1]), M2),
    ("split", torch.unbind, Net(lambda n, h, g: torch.unbind(h, 1)[2]), M2),
    ("split", "chunk", Net(lambda n, h, g: h.chunk(2, 3)[0]), M2),
    ("split", "split", Net(lambda n, h, g: h.split(3, 1)[1]), M2),
    ("split", "unbind", Net(lambda n, h, g: h.unbind(2)[5]), M2),
    ("patch_merging_pad", swin_transformer._patch_merging_pad,
     Net(lambda n, h, g: swin_transformer._patch_merging_pad(h.permute(0, 2, 3, 1))), M2),
    # analog: computed on decoded values, exact under sum coding
    ("layer_norm", nn.LayerNorm, Net(module_body, module=nn.LayerNorm(8)), M2),
    ("layer_norm", F.layer_norm, Net(lambda n, h, g: F.layer_norm(h - g, (8, 8))), M2),
    ("rms_norm", nn.RMSNorm, Net(lambda n, h, g: n.op(h - g), module=nn.RMSNorm(8, eps=1e-6)), M2),
    ("rms_norm", F.rms_norm, Net(lambda n, h, g: F.rms_norm(tokens(h), (8,)) + tokens(g)), M2),
    ("group_norm", nn.GroupNorm, Net(module_body, module=nn.GroupNorm(2, 4)), M2),
    ("group_norm", F.group_norm, Net(lambda n, h, g: F.group_norm(h - g, 1)), M2),
    ("normalize", F.normalize, Net(lambda n, h, g: F.normalize(h, dim=1) + g), M2),
    ("norm", torch.norm, Net(lambda n, h, g: h / (torch.norm(h, dim=(2, 3), keepdim=True) + 1)), M2),
    ("norm", torch.linalg.vector_norm, Net(lambda n, h, g: torch.linalg.vector_norm(h - g, dim=1)), M2),
    ("norm", "norm", Net(lambda n, h, g: h * h.norm(p=2, dim=1, keepdim=True)), M2),
    ("addcmul", torch.addcmul, with_tensors(Net(lambda n, h, g: torch.addcmul(n.beta, n.alpha, h)),
                                            alpha=torch.rand(4, 1, 1) + 0.5, beta=torch.randn(4, 1, 1)), M2),
    ("addcmul", "addcmul", Net(lambda n, h, g: g.addcmul(h, g, value=0.5)), M2),
    ("softmax", nn.Softmax, Net(module_body, module=nn.Softmax(dim=-1)), M2),
    ("softmax", F.softmax, Net(lambda n, h, g: F.softmax(h, 1)), M2),
    ("softmax", torch.softmax, Net(lambda n, h, g: torch.softmax(h - g, -1)), M2),
    ("softmax", "softmax", Net(lambda n, h, g: h.softmax(dim=2)), M2),
    ("matmul", operator.matmul, Net(lambda n, h, g: h @ g.transpose(-2, -1)), M2),
    ("matmul", torch.matmul, Net(lambda n, h, g: torch.matmul(h, g)), M2),
    ("matmul", torch.bmm, Net(lambda n, h, g: torch.bmm(tokens(h), tokens(g).transpose(1, 2))), M2),
    ("matmul", "matmul", Net(lambda n, h, g: h.matmul(g)), M2),
    ("einsum", torch.einsum, Net(lambda n, h, g: torch.einsum("bcij,bcjk->bcik", h, g)), M2),
    ("matmul", "bmm", Net(lambda n, h, g: tokens(h).bmm(tokens(g).transpose(1, 2))), M2),
    ("attention", F.scaled_dot_product_attention, Net(lambda n, h, g: F.scaled_dot_product_attention(h, g, h)), M2),
    ("multihead_attention", nn.MultiheadAttention,
     Net(lambda n, h, g: n.op(tokens(h), tokens(g), tokens(g), need_weights=False)[0],
         module=nn.MultiheadAttention(8, 2, batch_first=True)), M2),
    ("window_attention", swin_transformer.shifted_window_attention,
     Net(lambda n, h, g: n.op(h.permute(0, 2, 3, 1)),
         module=swin_transformer.ShiftedWindowAttention(4, [4, 4], [2, 2], num_heads=2)), M2),
    ("relative_position_bias", swin_transformer._get_relative_position_bias,
     Net(lambda n, h, g: n.op(h.permute(0, 2, 3, 1)),
         module=swin_transformer.ShiftedWindowAttention(4, [4, 4], [0, 0], num_heads=2)), M2),
    ("mul", operator.mul, Net(lambda n, h, g: h * g), M2),                      # a product of trains
    ("div", operator.truediv, Net(lambda n, h, g: h / (g + 1)), M2),            # a quotient of trains
    ("mul", "mul", with_tensors(Net(lambda n, h, g: h.mul(n.scale)), scale=torch.rand(4, 1, 1) + 0.5), M2),
    ("embedding", nn.Embedding, with_buffers(Net(lambda n, h, g: h + n.op(n.ids).view(4, 8, 8),
                                                 module=nn.Embedding(6, 64)), ids=torch.tensor([0, 3, 5, 3])), M2),
    ("gather", torch.gather, with_buffers(Net(lambda n, h, g: torch.gather(h, 3, n.index.expand(h.shape[0], 4, 8, 8))),
                                          index=torch.randint(8, (1, 4, 8, 8))), M2),
    # max pooling: the max of running sums, exact under sum coding
    ("max_pool2d", nn.MaxPool2d, Net(module_body, module=nn.MaxPool2d(2)), M2),
    ("max_pool2d", F.max_pool2d, Net(lambda n, h, g: F.max_pool2d(h - g, 3, 1, 1)), M2),
    ("max_pool1d", nn.MaxPool1d, Net(module_body, 1, nn.MaxPool1d(3, 2, 1, ceil_mode=True)), M1),
    ("max_pool1d", F.max_pool1d, Net(lambda n, h, g: F.max_pool1d(h, 2), 1), M1),
    ("adaptive_max_pool", nn.AdaptiveMaxPool1d, Net(module_body, 1, nn.AdaptiveMaxPool1d(3)), M1),
    ("adaptive_max_pool", F.adaptive_max_pool1d, Net(lambda n, h, g: F.adaptive_max_pool1d(h + g, 3), 1), M1),
    ("adaptive_max_pool", nn.AdaptiveMaxPool2d, Net(module_body, module=nn.AdaptiveMaxPool2d(3)), M2),
    ("adaptive_max_pool", F.adaptive_max_pool2d, Net(lambda n, h, g: F.adaptive_max_pool2d(h, (2, 3))), M2),
    ("amax", torch.amax, Net(lambda n, h, g: torch.cat([torch.amax(h, 1, keepdim=True), g], 1)), M2),
    ("amax", "amax", Net(lambda n, h, g: h.amax(dim=(2, 3)) - g.mean((2, 3))), M2),
    ("amax", torch.amax, Net(lambda n, h, g: g + 0.5 * h.max(1, keepdim=True)[0]), M2),  # VOLO, as traced
    ("amin", torch.amin, Net(lambda n, h, g: torch.cat([torch.min(h - g, dim=1, keepdim=True).values, g], 1)), M2),
    ("amin", "amin", Net(lambda n, h, g: h.amin(dim=(2, 3)) + g.amax(dim=(2, 3))), M2),
    ("constant_pad", F.pad, Net(lambda n, h, g: F.pad(h, (1, 0, 2, 1), value=1.0) * 2), M2),  # EfficientViT's ones
    # recurrent layers over tokens (Sequencer): the sequence, or the final states
    ("lstm", nn.LSTM, Net(lambda n, h, g: n.op(tokens(h))[0] + tokens(g), module=nn.LSTM(8, 8, batch_first=True)), M2),
    ("gru", nn.GRU, Net(lambda n, h, g: n.op(tokens(h).transpose(0, 1))[1][-1], module=nn.GRU(8, 4, num_layers=2)), M2),
    ("rnn", nn.RNN, Net(lambda n, h, g: n.op(tokens(h - g))[0], module=nn.RNN(8, 3, bidirectional=True,
                                                                               batch_first=True)), M2),
    # timm's MaxPool2dSame as traced: a −inf pad and a max pooling, one call
    ("max_pool2d_padded", max_pool2d_padded,
     Net(lambda n, h, g: F.max_pool2d(F.pad(h - g, (0, 1, 0, 1), value=-math.inf), 3, 2)), M2),
    # tensors read directly: Constant modules in the SNN
    ("constant", Constant, with_tensors(Net(lambda n, h, g: torch.cat([n.token.expand(h.shape[0], -1, -1, -1), h], 1)
                                            + n.position), token=torch.randn(1, 1, 8, 8), position=torch.randn(5, 8, 8)),
     M2),
]
DROPPED = [nn.Dropout(0.5), nn.Dropout1d(0.5), nn.Dropout2d(0.5), nn.AlphaDropout(0.5), StochasticDepth(0.5, "row")]
DROPPED_FUNCTIONS = [F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout]
ONE_D = (nn.Dropout1d, F.dropout1d)


def _forms(op) -> list:
    return [*op.modules, *op.functions, *op.methods]


def _uses(gm, name, form) -> bool:
    for node in gm.graph.nodes:
        entry = op_for_node(node, gm)
        if entry is None or entry.name != name:
            continue
        if node.op == "call_module" and type(gm.get_submodule(node.target)) is form:
            return True
        if node.op in ("call_function", "call_method") and node.target is form or node.target == form:
            return True
    return False


def _built(net, shape):
    torch.manual_seed(0)
    net(torch.zeros(1, *shape))  # materialise LazyLinear
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.uniform_(m.weight, -0.6, 0.6)
    return net.eval()


def test_every_form_of_every_accepted_entry_has_an_example():
    covered = {(name, form) for name, form, _, _ in EXAMPLES}
    for op in OPS:
        if op.kind in (Kind.SYNAPTIC, Kind.STATELESS, Kind.AFFINE, Kind.MERGE, Kind.SHAPE, Kind.ANALOG, Kind.CONSTANT):
            missing = [f for f in _forms(op) if (op.name, f) not in covered]
            assert not missing, f"op table entry {op.name!r}: no example graph for {missing}"


@pytest.mark.parametrize("name, form, net, shape", EXAMPLES,
                         ids=[f"{n}-{getattr(f, '__name__', f)}" for n, f, _, _ in EXAMPLES])
def test_accepted_op_converts_and_pasc_stays_exact(name, form, net, shape):
    net = _built(net, shape)
    qann = sb.prepare(net, levels=5, threshold=1.0, replace_maxpool=False).double()
    x = torch.randn(4, *shape, dtype=torch.float64)
    snn = sb.convert(qann, "pasc").double()
    assert _uses(snn.graph if form is Constant else trace(net), name, form), f"the example does not use {name} as {form}"
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9, report.table()
    assert sum(report.mismatches.values()) == 0
    analog = {node.name for node in analog_nodes(snn.graph)}
    assert set(snn.simulate(x).analog_ops) == analog  # every op computed on decoded values is listed
    entry = next(op for op in OPS if op.name == name)
    if entry.kind is Kind.ANALOG:
        assert any(op_for_node(n, snn.graph) is entry for n in snn.graph.graph.nodes if n.name in analog)
    res = sb.convert(qann, "qcfs", T=3).double().simulate(x)
    assert res.logits.shape == (3, 4, 3) and torch.isfinite(res.logits).all()


@pytest.mark.parametrize("dropout", DROPPED + DROPPED_FUNCTIONS, ids=lambda d: getattr(d, "__name__", type(d).__name__))
def test_dropped_entries_leave_the_graph(dropout):
    body = module_body if isinstance(dropout, nn.Module) else (lambda n, h, g: dropout(h, 0.5, n.training))
    one_d = type(dropout) in ONE_D or dropout in ONE_D
    net = _built(Net(body, dims=1 if one_d else 2, module=dropout if isinstance(dropout, nn.Module) else None),
                 M1 if one_d else M2)
    assert any(op_for_node(n, trace(net)) is not None and op_for_node(n, trace(net)).kind is Kind.DROPPED
               for n in trace(net).graph.nodes)
    snn = sb.convert(sb.prepare(net, levels=4), "pasc")
    assert not any((op := op_for_node(n, snn.graph)) is not None and op.kind is Kind.DROPPED
                   for n in snn.graph.graph.nodes)
    # torchvision's StochasticDepth traces as a call of stochastic_depth (which it fx-wraps)
    covered = {type(d) for d in DROPPED} | set(DROPPED_FUNCTIONS) | {stochastic_depth}
    assert covered == set(_forms(next(op for op in OPS if op.kind is Kind.DROPPED)))


@pytest.mark.parametrize("bn, body, shape", [
    (nn.BatchNorm2d(4), lambda n, h, g: n.op(h + g), M2),      # after an add: becomes a 1x1 conv
    (nn.BatchNorm1d(4), lambda n, h, g: n.op(h + g), M1),
], ids=["BatchNorm2d", "BatchNorm1d"])
def test_folded_entries_leave_the_graph_exactly(bn, body, shape):
    net = Net(body, dims=len(shape) - 1, module=bn)
    net = _built(net, shape)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    qann = sb.prepare(net, levels=5, threshold=1.0).double()
    snn = sb.convert(qann, "pasc").double()
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in snn.modules())
    report = sb.verify(qann, snn, torch.randn(4, *shape, dtype=torch.float64))
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9


def test_a_batchnorm1d_before_a_linear_layer_folds_into_it():
    """RepViT's and iFormer's head: pooled features → BatchNorm1d → linear, one linear layer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(4),
                        nn.Linear(4, 3)).eval()
    net[4].running_mean.uniform_(-0.5, 0.5), net[4].running_var.uniform_(0.5, 2.0), net[4].weight.data.uniform_(0.5, 2)
    qann = sb.prepare(net, levels=5, threshold=1.0).double()
    snn = sb.convert(qann, "pasc").double()
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.Conv1d)) for m in snn.modules())
    report = sb.verify(qann, snn, torch.randn(8, *M2, dtype=torch.float64))
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9


@pytest.mark.parametrize("relu", [nn.ReLU(), F.relu, torch.relu, torch.relu_, "relu", "relu_"],
                         ids=["ReLU", "F.relu", "torch.relu", "torch.relu_", "relu", "relu_"])
def test_activation_entries_become_sites(relu):
    if isinstance(relu, nn.Module):
        body = module_body
    elif isinstance(relu, str):
        body = lambda n, h, g: getattr(h + g, relu)()  # noqa: E731
    else:
        body = lambda n, h, g: relu(h + g)  # noqa: E731
    net = _built(Net(body, module=relu if isinstance(relu, nn.Module) else None), M2)
    qann = sb.prepare(net, levels=4)
    assert len(sb.sites(qann)) == 3  # the two F.relu of Net and the one under test
    assert all(type(m) is sb.QCFS for m in sb.sites(qann).values())
    assert len(sb.convert(qann, "pasc").neurons()) == 3
    relu_op = next(op for op in OPS if op.name == "relu")
    assert set(_forms(relu_op)) <= {type(nn.ReLU()), F.relu, torch.relu, torch.relu_, "relu", "relu_"}


# every form of every quantized-activation entry, with the f and k_min its site must get (docs/methods.md §8)
QUANTIZED_FORMS = {
    nn.ReLU6: ("relu", 0), F.relu6: ("relu", 0), ReLUSquared: ("relu_squared", 0),
    nn.GELU: ("gelu", -1), F.gelu: ("gelu", -1), nn.SiLU: ("silu", -1), F.silu: ("silu", -1),
    nn.Hardswish: ("hardswish", -1), F.hardswish: ("hardswish", -1),
    nn.Sigmoid: ("sigmoid", 0), F.sigmoid: ("sigmoid", 0), torch.sigmoid: ("sigmoid", 0), "sigmoid": ("sigmoid", 0),
    "sigmoid_": ("sigmoid", 0), nn.Hardsigmoid: ("hardsigmoid", 0), F.hardsigmoid: ("hardsigmoid", 0),
    nn.Tanh: ("tanh", -4), F.tanh: ("tanh", -4), torch.tanh: ("tanh", -4), "tanh": ("tanh", -4), "tanh_": ("tanh", -4),
    nn.Mish: ("mish", -1), F.mish: ("mish", -1), nn.SELU: ("selu", -4), F.selu: ("selu", -4), torch.selu: ("selu", -4),
    # parametric f at their defaults (k_min = −L but for Softplus, which is positive)
    nn.LeakyReLU: ("leaky_relu(0.01)", -4), F.leaky_relu: ("leaky_relu(0.01)", -4), nn.ELU: ("elu(1.0)", -4),
    F.elu: ("elu(1.0)", -4), nn.CELU: ("celu(1.0)", -4), F.celu: ("celu(1.0)", -4),
    nn.Softplus: ("softplus(1.0, 20.0)", 0), F.softplus: ("softplus(1.0, 20.0)", 0),
}
QUANTIZED_OPS = [op for op in OPS if op.kind is Kind.ACTIVATION and op.name not in ("relu", "qcfs", "clamp_relu",
                                                                                   "hardtanh_relu")]


def test_every_form_of_every_quantized_activation_entry_has_an_example():
    assert {f for op in QUANTIZED_OPS for f in _forms(op)} == set(QUANTIZED_FORMS)


@pytest.mark.parametrize("form", list(QUANTIZED_FORMS), ids=lambda f: getattr(f, "__name__", str(f)))
def test_quantized_activation_entries_become_sites_of_their_f(form):
    if isinstance(form, type):
        body = module_body
    elif isinstance(form, str):
        body = lambda n, h, g: getattr(h - g, form)()  # noqa: E731
    else:
        body = lambda n, h, g: form(h - g)  # noqa: E731
    net = _built(Net(body, module=form() if isinstance(form, type) else None), M2).double()
    qann = sb.prepare(net, levels=4).eval()
    site = list(sb.sites(qann).values())[-1]
    function, k_min = QUANTIZED_FORMS[form]
    assert (getattr(site, "function", "relu"), getattr(site, "k_min", 0)) == (function, k_min)
    for method in ("pasc", "bitplane"):
        report = sb.verify(qann, sb.convert(qann, method), torch.randn(4, *M2, dtype=torch.float64))
        assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


@pytest.mark.parametrize("approximate, function", [("none", "gelu"), ("tanh", "gelu_tanh")])
def test_gelu_entry_reads_the_approximation(approximate, function):
    for body in (lambda n, h, g: F.gelu(h, approximate=approximate), module_body):
        qann = sb.prepare(_built(Net(body, module=nn.GELU(approximate=approximate)), M2))
        assert list(sb.sites(qann).values())[-1].function == function


# entries that mean some calls of their forms only: clips to [0, c] or [0, ∞) are ReLU sites (docs/methods.md §8)
CLIP_FORMS = [f for op in OPS if op.name in ("clamp_relu", "hardtanh_relu") for f in _forms(op)]
BOUNDED = {nn.Hardtanh, F.hardtanh}                             # need a finite upper bound above the lower
LOWER_ONLY = {torch.clamp_min, "clamp_min", "clamp_min_"}       # take no upper bound


def _clip_net(form, low, high) -> Net:
    if form is nn.Hardtanh:
        return Net(module_body, module=nn.Hardtanh(low, high))
    bounds = (low,) if form in LOWER_ONLY else (low, high)
    if isinstance(form, str):
        return Net(lambda n, h, g: getattr(h - g, form)(*bounds))
    return Net(lambda n, h, g: form(h - g, *bounds))


def test_every_entry_with_applies_shares_its_forms_with_a_general_entry():
    """A call an entry with ``applies`` does not mean falls to the general entry of its form (a refusal)."""
    general = {f for op in OPS if op.applies is None for f in _forms(op)}
    assert CLIP_FORMS and set(CONDITIONAL) <= general


@settings(max_examples=60, deadline=None)
@given(form=st.sampled_from(CLIP_FORMS), low=st.sampled_from([0, 0.0, -1.0, 0.5]),
       high=st.sampled_from([None, 0.5, 3, 6.0, float("inf"), 0.0, -0.5]))
def test_a_clip_to_zero_and_above_is_a_relu_site_and_any_other_is_refused(form, low, high):
    """clamp/clip/clamp_min/hardtanh with lower bound 0 and upper bound c > 0 (or none) is a ReLU
    site clipped at θ = c: prepare starts its QCFS at c, and the ReLU methods' graph computes the
    ANN's values; with any other bounds it is refused (as a nonlinear op, or as an activation)."""
    high = None if form in LOWER_ONLY else high
    assume(form not in BOUNDED or (high is not None and high > low))
    net = _built(_clip_net(form, low, high), M2).double()
    x = torch.randn(4, *M2, dtype=torch.float64)
    if low == 0 and (high is None or high > 0):
        qann = sb.prepare(net, levels=4, threshold=2.0)
        sites = list(sb.sites(qann).values())
        assert len(sites) == 3 and type(sites[-1]) is sb.QCFS
        assert float(sites[-1].threshold.detach()) == (2.0 if high is None or high == float("inf") else high)
        gm, modules = ann_site_modules(net, relu=True)
        assert len(modules) == 3 and torch.equal(gm(x), net(x))
    elif form in BOUNDED:
        with pytest.raises(UnsupportedActivationError, match="clips to \\[0, c\\]"):
            sb.prepare(net)
    else:
        with pytest.raises(ConversionError, match="no step-by-step meaning"):
            sb.convert(sb.prepare(net, levels=4), "pasc")


@pytest.mark.parametrize("call, function", [
    (nn.LeakyReLU(0.2), "leaky_relu(0.2)"), (lambda h: F.leaky_relu(h, negative_slope=0.3), "leaky_relu(0.3)"),
    (nn.ELU(alpha=0.5), "elu(0.5)"), (lambda h: F.elu(h, 2), "elu(2.0)"), (lambda h: F.celu(h, alpha=0.5), "celu(0.5)"),
    (nn.Softplus(2.0, 5.0), "softplus(2.0, 5.0)"), (lambda h: F.softplus(h, threshold=4), "softplus(1.0, 4.0)")])
def test_parametric_entries_read_their_numbers(call, function):
    net = Net(module_body, module=call) if isinstance(call, nn.Module) else Net(lambda n, h, g: call(h - g))
    qann = sb.prepare(_built(net, M2).double(), levels=4)
    assert list(sb.sites(qann).values())[-1].function == function
    report = sb.verify(qann, sb.convert(qann, "pasc"), torch.randn(4, *M2, dtype=torch.float64))
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


def test_a_parametric_activation_with_a_computed_number_is_refused_by_prepare():
    net = Net(lambda n, h, g: F.leaky_relu(h, 1 / h.size(1)))
    with pytest.raises(UnsupportedActivationError, match="its parameters are computed"):
        sb.prepare(_built(net, M2))


REFUSED_ACTIVATION = next(op for op in OPS if op.name == "other_activation")
ALWAYS_REFUSED = [f for f in _forms(REFUSED_ACTIVATION) if f not in CONDITIONAL]  # the others: when no entry applies


@pytest.mark.parametrize("form", ALWAYS_REFUSED, ids=lambda f: getattr(f, "__name__", str(f)))
def test_other_activations_are_refused_by_prepare_with_the_advice(form):
    if isinstance(form, type):
        module = form() if form not in (nn.GLU,) else form(dim=1)
        net = Net(module_body, module=module)
    elif isinstance(form, str):
        net = Net(lambda n, h, g: getattr(h, form)())
    elif form is F.glu:
        net = Net(lambda n, h, g: form(h, 1))
    elif form is F.prelu:
        net = Net(lambda n, h, g: form(h, torch.ones(1)))
    else:
        net = Net(lambda n, h, g: form(h))
    with pytest.raises(UnsupportedActivationError, match="replace it with one of those"):
        sb.prepare(net)


def test_prepare_swaps_exactly_the_entries_that_declare_a_replacement():
    net = _built(Net(module_body, module=nn.MaxPool2d(2)), M2)
    with pytest.warns(UserWarning, match="replaced 1 max pooling"):
        qann = sb.prepare(net)
    assert isinstance(qann.op, nn.AvgPool2d)
    assert sb.convert(qann, "pasc") is not None
    net1 = _built(Net(module_body, dims=1, module=nn.MaxPool1d(2)), M1)
    qann1 = sb.prepare(net1)  # no replacement declared: kept, and converted as max pooling
    assert isinstance(qann1.op, nn.MaxPool1d)
    assert isinstance(sb.convert(qann1, "pasc").graph.get_submodule("op"), nn.MaxPool1d)


@pytest.mark.parametrize("value", [-math.inf, math.inf, math.nan])
def test_a_pad_with_an_infinite_or_nan_value_is_refused_with_the_advice(value):
    net = _built(Net(lambda n, h, g: F.pad(h, (1, 1, 1, 1), value=value)), M2)
    with pytest.raises(ConversionError, match="infinite or nan value is no value a spike train can carry"):
        sb.convert(sb.prepare(net, levels=4), "pasc")


@pytest.mark.parametrize("value, entry", [(0, "pad"), (0.0, "pad"), (None, "pad"), (1.0, "constant_pad"),
                                          (-2, "constant_pad"), (-math.inf, "infinite_pad")])
def test_a_constant_pad_is_stateless_at_zero_and_analog_at_another_finite_value(value, entry):
    gm = trace(Net(lambda n, h, g: F.pad(h, (1, 1), value=value)))
    (node,) = [n for n in gm.graph.nodes if n.target is F.pad]
    assert op_for_node(node, gm).name == entry


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_a_cast_to_an_integer_dtype_is_refused(dtype):
    net = _built(Net(lambda n, h, g: h.to(dtype).to(h.dtype)), M2)
    with pytest.raises(ConversionError, match="node 'to'.*rounds each step's value of a spike train"):
        sb.convert(sb.prepare(net, levels=4), "pasc")


CASTS = {  # call -> its entry
    "to('cpu')": (lambda h, g: h.to("cpu"), "cast"),
    "to(float64)": (lambda h, g: h.to(torch.float64), "cast"),
    "to(g.dtype)": (lambda h, g: h.to(g.dtype), "cast"),
    "to(dtype=float64, copy=True)": (lambda h, g: h.to(dtype=torch.float64, copy=True), "cast"),
    "double()": (lambda h, g: h.double(), "cast"),
    "type_as(g)": (lambda h, g: h.type_as(g), "cast"),
    "to(float32)": (lambda h, g: h.to(torch.float32), "narrowing_cast"),
    "to('cpu', bfloat16)": (lambda h, g: h.to("cpu", torch.bfloat16), "narrowing_cast"),
    "to(dtype=float16)": (lambda h, g: h.to(dtype=torch.float16), "narrowing_cast"),
    "float()": (lambda h, g: h.float(), "narrowing_cast"),
    "half()": (lambda h, g: h.half(), "narrowing_cast"),
    "bfloat16()": (lambda h, g: h.bfloat16(), "narrowing_cast"),
    "to(int32)": (lambda h, g: h.to(torch.int32), "integer_cast"),
    "to(dtype=bool)": (lambda h, g: h.to(dtype=torch.bool), "integer_cast"),
}


@pytest.mark.parametrize("cast, entry", CASTS.values(), ids=CASTS)
def test_a_cast_keeps_values_step_by_step_unless_it_narrows_a_float64_train(cast, entry):
    """A narrowing cast rounds: step by step the rounded steps do not sum to the rounded value."""
    gm = trace(Net(lambda n, h, g: cast(h, g) - g))
    (node,) = [n for n in gm.graph.nodes if n.op == "call_method"]  # g.dtype and - are function calls
    assert op_for_node(node, gm).name == entry


def test_an_op_outside_the_table_is_refused_naming_the_node_and_the_supported_set():
    net = _built(Net(lambda n, h, g: torch.erf(h)), M2)
    with pytest.raises(ConversionError, match=r"node 'erf'.*can only hold conv, conv_transpose, linear, avg_pool1d"):
        sb.convert(sb.prepare(net), "pasc")


def test_the_engine_refuses_a_module_it_does_not_know():
    net = _built(Net(module_body), M2)
    snn = sb.convert(sb.prepare(net), "pasc")
    snn.graph.add_submodule("op", nn.Softplus())  # smuggled in after conversion
    with pytest.raises(ConversionError, match="neither a spiking neuron nor an op of the op table"):
        snn.simulate(torch.randn(2, *M2))
