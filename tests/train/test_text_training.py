"""Training bert_tiny on the synthetic sentiment task: the recipe, checkpoints, fine-tuning into
quantized sites, and the CLI."""
import pytest
import torch

from spikebridge import sites
from spikebridge.cli import main
from spikebridge.errors import SpikeBridgeError
from spikebridge.text import synthetic_sentiment
from spikebridge.train.checkpoint import load_ann, load_checkpoint
from spikebridge.train.loop import TrainConfig, train

pytest.importorskip("transformers")

TINY = dict(model="bert_tiny", dataset="synthetic-sentiment", batch_size=32, limit_train=512, limit_test=128,
            model_kwargs={"hidden": 16, "intermediate": 32})


def test_float_bert_learns_with_adamw_then_fine_tunes_into_quantized_sites(tmp_path, one_thread):
    model, history = train(TrainConfig(out=str(tmp_path / "float"), epochs=3, levels=None, **TINY), progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    ckpt = load_checkpoint(tmp_path / "float" / "last.pt")
    assert ckpt["model"] == {"name": "bert_tiny", "num_classes": 2, "vocab_size": 46, "max_len": 16,
                             "hidden": 16, "intermediate": 32}
    assert ckpt["args"]["lr"] == 1e-3 and ckpt["args"]["weight_decay"] == 0.01
    assert list(ckpt["optimizer"]["param_groups"][0]) >= ["lr", "betas"]  # AdamW's state
    x = synthetic_sentiment("test").input_ids[:8]
    torch.testing.assert_close(load_ann(tmp_path / "float" / "last.pt")(x), model(x), rtol=0, atol=0)

    quantized, _ = train(TrainConfig(out=str(tmp_path / "q"), epochs=1, levels=8,
                                     init_from=str(tmp_path / "float" / "last.pt"), **TINY), progress=False)
    found = sites(quantized)
    assert len(found) == 3 and {m.levels for m in found.values()} == {8}
    assert all(0.01 < m.threshold.item() < 8 for m in found.values())  # 99.9th percentiles, not the default 8


def test_text_and_image_models_do_not_mix(tmp_path):
    with pytest.raises(SpikeBridgeError, match="synthetic-sentiment is a text task; model small_cnn takes images"):
        train(TrainConfig(out=str(tmp_path), **dict(TINY, model="small_cnn", model_kwargs={})), progress=False)
    with pytest.raises(SpikeBridgeError, match="fashion-mnist is images; model bert_tiny takes token ids"):
        train(TrainConfig(out=str(tmp_path), **dict(TINY, dataset="fashion-mnist")), progress=False)


def test_cli_trains_bert_tiny(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["train", "--model", "bert_tiny", "--dataset", "synthetic-sentiment", "--epochs", "1",
                 "--limit-train", "64", "--limit-test", "32", "--levels", "4", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["levels"] is not None


def test_cli_trains_bert_tiny_on_glue_files(tmp_path, capsys, one_thread):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    rows = "".join(f"a {w} film\t{int(w == 'good')}\n" for w in ["good", "bad"] * 8)
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text("sentence\tlabel\n" + rows)
    out = tmp_path / "run"
    assert main(["train", "--model", "bert_tiny", "--dataset", "sst2", "--data-root", str(tmp_path), "--epochs", "1",
                 "--relu", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert load_checkpoint(out / "last.pt")["model"] == {"name": "bert_tiny", "num_classes": 2,
                                                         "vocab_size": len(words), "max_len": 128}


def test_cli_as_relu_trains_the_001_recipe_and_rate_coding_converts_it(tmp_path, capsys, one_thread):
    """001 A.6: GELU → QCFS (ReLU) sites; the checkpoint rebuilds them, qcfs converts at T = 16."""
    import spikebridge as sb
    from spikebridge.ann.qcfs import QCFS
    from spikebridge.ann.quantized import QuantizedActivation

    out = tmp_path / "run"
    assert main(["train", "--model", "bert_tiny", "--dataset", "synthetic-sentiment", "--epochs", "1",
                 "--limit-train", "64", "--limit-test", "32", "--levels", "4", "--as-relu", "gelu", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    ann = load_ann(out / "last.pt")
    assert all(type(m) is QCFS and not isinstance(m, QuantizedActivation) for m in sites(ann).values())
    logits = sb.convert(ann, "qcfs", T=16).simulate(synthetic_sentiment("test").input_ids[:4]).logits
    assert logits.shape == (16, 4, 2) and torch.isfinite(logits).all()
    with pytest.raises(SpikeBridgeError, match="as_relu names unknown activation"):
        sb.prepare(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.GELU()), as_relu=["gleu"])
