"""torch.fx tracing of Hugging Face transformers classifiers, and sb.prepare of a small BERT."""
import pytest
import torch
from torch import fx, nn

import spikebridge as sb
from spikebridge import models
from spikebridge.ann.hf_tracing import ExampleTracer
from spikebridge.ann.tracing import trace

VOCAB = 50


def small_bert(pooler_gelu=True):
    """BertForSequenceClassification, hidden 32, 2 layers of 2 heads, in float64 and eval mode."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=16, num_labels=3)
    model = transformers.BertForSequenceClassification(config).double().eval()
    if pooler_gelu:
        model.bert.pooler.activation = nn.GELU()
    return model


def token_ids(batch, length, seed=0):
    return torch.randint(VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


class Heads(nn.Module):
    """Unpacks a shape, which a plain torch.fx trace cannot do."""

    def forward(self, x):
        return x.view(*x.shape[:-1], 2, -1).transpose(-2, -3).sum(-1)


def test_example_tracer_unpacks_shapes_for_any_input_shape():
    with pytest.raises(Exception):
        fx.symbolic_trace(Heads())
    gm = fx.GraphModule(Heads(), ExampleTracer(torch.zeros(2, 3, 4)).trace(Heads()))
    for shape in [(5, 7, 8), (1, 2, 6)]:
        x = torch.randn(shape)
        torch.testing.assert_close(gm(x), Heads()(x), rtol=0, atol=0)


def test_traced_bert_gives_the_models_logits_for_any_batch_and_length():
    model = small_bert(pooler_gelu=False)
    gm = trace(model)
    for batch, length in [(3, 16), (5, 7), (1, 1)]:
        x = token_ids(batch, length)
        torch.testing.assert_close(gm(x), model(input_ids=x).logits, rtol=0, atol=1e-12)
    assert model.config._attn_implementation == "sdpa"  # the user's model is not changed
    modules = {type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"}
    assert modules == {"Embedding", "LayerNorm", "Linear", "Dropout", "Tanh"}
    functions = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert {torch.matmul, nn.functional.softmax, nn.functional.gelu} <= functions
    assert "bert.encoder.layer.1.attention.self.query" in dict(gm.named_modules())


def test_the_stock_poolers_tanh_becomes_a_symmetric_site_and_converts_exactly():
    qann = sb.prepare(small_bert(pooler_gelu=False), levels=8, threshold=1.0).eval()
    pooler = sb.sites(qann)["bert.pooler.activation"]
    assert (pooler.function, pooler.k_min) == ("tanh", -8)
    x = token_ids(6, 12, seed=2)
    report = sb.verify(qann, sb.convert(qann, "pasc"), x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


def test_prepared_bert_is_the_model_up_to_quantization():
    model = small_bert()
    prepared = sb.prepare(model, levels=8)
    assert list(sb.sites(prepared)) == ["bert.encoder.layer.0.intermediate.intermediate_act_fn.gelu",
                                        "bert.encoder.layer.1.intermediate.intermediate_act_fn.gelu_1",
                                        "bert.pooler.activation"]
    assert all(site.function == "gelu" and site.k_min == -1 for site in sb.sites(prepared).values())
    x = token_ids(4, 12)
    float_sites = trace(prepared)
    for name in sb.sites(prepared):
        float_sites.add_submodule(name, nn.GELU())  # each site back to the GELU it quantizes
    torch.testing.assert_close(float_sites(x), model(input_ids=x).logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(trace(prepared)(x), prepared(x), rtol=0, atol=0)  # re-traces, as convert does


def test_bert_tiny_builds_trains_and_rebuilds():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = models.create("bert_tiny", num_classes=2, vocab_size=VOCAB, max_len=16)
    assert isinstance(model, fx.GraphModule) and models.takes_text("bert_tiny")
    assert model.spikebridge_spec == {"name": "bert_tiny", "num_classes": 2, "vocab_size": VOCAB, "max_len": 16}
    assert model.bert.embeddings.position_embeddings.num_embeddings == 16
    x = token_ids(4, 16)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    rebuilt = models.create(**model.spikebridge_spec)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    prepared = sb.prepare(model, levels=4)
    assert len(sb.sites(prepared)) == 3 and prepared(x).shape == (4, 2)


def test_bert_tiny_options_and_errors():
    pytest.importorskip("transformers")
    with pytest.raises(sb.SpikeBridgeError, match="cannot build bert_tiny: .*hidden size"):
        models.create("bert_tiny", hidden=30, heads=4)
    with pytest.raises(sb.SpikeBridgeError, match="takes token ids"):
        models.create("bert_tiny", in_channels=1)
    with pytest.raises(sb.SpikeBridgeError, match="no option width"):
        models.create("bert_tiny", width=3)


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_a_prepared_bert_converts_exactly_with_attention_layer_norm_and_embeddings_analog(method):
    qann = sb.prepare(small_bert(), levels=8, threshold=1.0).eval()
    x = token_ids(6, 12, seed=1)
    snn = sb.convert(qann, method)
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0 and report.max_logit_diff < 1e-9
    ops = {r["op"] for r in snn.simulate(x).analog_ops.values()}
    assert {"embedding", "layer_norm", "matmul", "softmax"} <= ops
    with pytest.raises(sb.InputError, match="token ids"):
        snn.simulate(x.double())


def test_qcfs_refuses_berts_gelu_sites_naming_one():
    with pytest.raises(sb.ConversionError, match=r"quantizes gelu"):
        sb.convert(sb.prepare(small_bert(), levels=8), "qcfs", T=4)
