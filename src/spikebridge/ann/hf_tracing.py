"""torch.fx tracing of Hugging Face ``transformers`` sequence classifiers (BERT and the like).

transformers 5 no longer ships its own fx tracer (``transformers.utils.fx`` is gone), and a
plain ``torch.fx.symbolic_trace`` fails on its models: they unpack shapes
(``(*input_shape, -1, head_size)``), slice buffers by the sequence length, and return output
dataclasses. ``trace_transformers`` traces one with torch.fx all the same:

- The model is called as ``model(input_ids=x).logits``: the graph takes token ids [B, S] alone
  and returns logits [B, classes]. Every other input takes the model's default: the attention
  mask is all ones (padding tokens are attended to, in training and conversion alike) and the
  token types are all 0.
- ``ExampleTracer`` (example_tracing.py) knows the shapes of an example input as it traces, so a
  shape can be unpacked: its length (the rank) comes from the example, its entries stay graph
  nodes, so the graph works for any batch size and sequence length. Control flow on a tensor's
  data is still refused, as by torch.fx.
- Buffers read in ``forward`` (BERT's position ids and token types) become ``get_attr`` nodes.
- Attention is switched to transformers' "eager" implementation, which writes it as matmul,
  softmax and matmul (SDPA's wrapper decides ``is_causal`` by comparing a traced length, which
  cannot be traced), and the model is traced in eval mode: transformers reads its attention
  dropout probability at trace time, so the graph has none; ``nn.Dropout`` modules stay modules.

The result is a graph of nn modules (Embedding, Linear, LayerNorm, Dropout, activations) and
functions and methods (matmul, softmax, gelu, add, mul, view, transpose, getitem, ...), which is
what the op table reads. torch.export was the other option: it gives ATen ops with the weights
as inputs and no module leaves, so nothing of the op table (which knows ``nn.Linear`` as a
synaptic layer, ``F.gelu`` as an activation site) would apply without a translation layer.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from ..errors import SpikeBridgeError, first_line
from .example_tracing import ExampleTracer

EXAMPLE_LENGTH = 4  # tokens of the example input (at most the model's max_position_embeddings)


def is_transformers_model(model: nn.Module) -> bool:
    """A model class of Hugging Face transformers (detected without importing it)."""
    return type(model).__module__.startswith("transformers.")


class _Logits(nn.Module):
    """``model(input_ids=x).logits`` as a module taking token ids."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


def trace_transformers(model: nn.Module) -> fx.GraphModule:
    """A GraphModule computing ``model(input_ids=x).logits`` from token ids x [B, S] (see the
    module docstring), with the model's module paths and parameter names. ``model`` itself is
    switched to eager attention and traced in eval mode: pass a copy."""
    training = model.training
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    model.eval()
    parameter = next(model.parameters())
    length = min(EXAMPLE_LENGTH, getattr(model.config, "max_position_embeddings", EXAMPLE_LENGTH))
    example = torch.zeros(2, length, dtype=torch.long, device=parameter.device)
    try:
        graph = ExampleTracer(example).trace(_Logits(model))
    except Exception as exc:  # fx and transformers raise many types; the user needs one clear line
        raise SpikeBridgeError(f"torch.fx could not trace {type(model).__name__} from its input_ids: "
                               f"{first_line(exc)}") from exc
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr"):
            node.target = node.target.removeprefix("model.")
        stack = node.meta.get("nn_module_stack")
        if stack:
            node.meta["nn_module_stack"] = {key: (path.removeprefix("model").removeprefix("."), kind)
                                            for key, (path, kind) in stack.items()}
    gm = fx.GraphModule(model, graph, type(model).__name__)
    gm.graph.eliminate_dead_code()  # shapes read but not used
    gm.recompile()
    return gm.train(training)
