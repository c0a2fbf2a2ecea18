"""A small BERT classifier: Hugging Face transformers' BertForSequenceClassification with a tiny
config, traced to a GraphModule that takes token ids [B, S] and returns logits (docs/text.md)."""
from torch import fx, nn

from ..ann.hf_tracing import trace_transformers
from ..errors import SpikeBridgeError, first_line, require_transformers


def bert_tiny(num_classes=2, vocab_size=30522, max_len=128, hidden=32, layers=2, heads=2, intermediate=64,
              dropout=0.1) -> fx.GraphModule:
    """BertForSequenceClassification (hidden size ``hidden``, ``layers`` encoder layers of
    ``heads`` heads, feed-forward width ``intermediate``, ``max_len`` positions), traced by
    ``trace_transformers``: its parameters keep transformers' names.

    Two changes from the stock model, so that prepare() can quantize every nonlinearity by the
    001 A.6 recipe (GELU → quantized activation): the pooler's tanh is a GELU (the op table has
    no quantized tanh), and attention dropout is 0 (the traced graph has none, so the float
    model is trained as the prepared one); ``dropout`` applies to the hidden states."""
    transformers = require_transformers("the bert_tiny model")
    try:
        config = transformers.BertConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate, max_position_embeddings=max_len, num_labels=num_classes,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=0.0)
        model = transformers.BertForSequenceClassification(config)
    except ValueError as exc:  # e.g. a hidden size that the heads do not divide
        raise SpikeBridgeError(f"cannot build bert_tiny: {first_line(exc)}") from None
    model.bert.pooler.activation = nn.GELU()
    return trace_transformers(model)
