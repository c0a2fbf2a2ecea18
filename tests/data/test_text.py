"""Text tasks: GLUE-style TSV files and a WordPiece vocabulary written here, and the synthetic
sentiment task."""
import numpy as np
import pytest
import torch

from spikebridge import data, errors
from spikebridge.errors import DataError, SpikeBridgeError
from spikebridge.text import glue, load_glue, synthetic, synthetic_sentiment

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film", "is", "what", "who",
         "the", "plot", "##s", "?", "."]
SST2 = "sentence\tlabel\na good film\t1\nthe plot is bad .\t0\nfilms\t1\n"
QNLI = ("index\tquestion\tsentence\tlabel\n0\twhat is good ?\ta film is good .\tentailment\n"
        "1\twho is bad ?\tthe plot .\tnot_entailment\n")
QQP = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\twhat is good ?\twho is good ?\t0\n"


def ids(*words):
    return [WORDS.index(w) for w in words]


def write_task(directory, train, dev=None, vocab=True):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.tsv").write_text(train)
    (directory / "dev.tsv").write_text(dev or train)
    if vocab:
        (directory / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return directory


class WordTokenizer:
    """A tokenizer object with the call a transformers tokenizer has: one id per word ([UNK] for
    others), [CLS] a [SEP] (b [SEP]), padded with 0 and truncated (the longer text first)."""

    def __len__(self):
        return len(WORDS)

    def ids(self, text):
        return [WORDS.index(w) if w in WORDS else WORDS.index("[UNK]") for w in text.split()]

    def __call__(self, first, second=None, padding=None, truncation=None, max_length=None, return_tensors=None):
        rows = []
        for i, text in enumerate(first):
            a, b = self.ids(text), self.ids(second[i]) if second else []
            while len(a) + len(b) + 2 + bool(second) > max_length:
                (b if len(b) >= len(a) else a).pop()
            rows.append(ids("[CLS]") + a + ids("[SEP]") + (b + ids("[SEP]") if second else []))
        return {"input_ids": torch.tensor([r + [0] * (max_length - len(r)) for r in rows])}


def test_sst2_with_a_tokenizer_object(tmp_path):
    ds = load_glue("sst2", write_task(tmp_path, SST2), "train", tokenizer=WordTokenizer(), max_len=6)
    assert ds.input_ids.tolist()[0] == ids("[CLS]", "a", "good", "film", "[SEP]", "[PAD]")
    assert ds.input_ids.tolist()[1] == ids("[CLS]", "the", "plot", "is", "bad", "[SEP]")  # truncated
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.attention_mask.tolist()[0] == [1] * 6 and ds.token_type_ids.abs().sum() == 0  # the tokenizer's defaults
    assert (ds.info.num_classes, ds.info.vocab_size, ds.info.max_len) == (2, len(WORDS), 6)
    x, y = ds[2]
    assert x.dtype == torch.long and x.shape == (6,) and y == 1


def test_sst2_qnli_qqp_with_a_wordpiece_vocabulary(tmp_path):
    pytest.importorskip("transformers")
    sst2 = load_glue("sst2", write_task(tmp_path / "sst2", SST2), "dev", max_len=8)
    assert sst2.input_ids[2].tolist() == ids("[CLS]", "film", "##s", "[SEP]") + [0] * 4  # WordPiece split
    assert sst2.attention_mask[2].tolist() == [1] * 4 + [0] * 4
    qnli = load_glue("qnli", write_task(tmp_path / "qnli", QNLI), "train", max_len=16)
    first = ids("[CLS]", "what", "is", "good", "?", "[SEP]")
    assert qnli.input_ids[0, :12].tolist() == first + ids("a", "film", "is", "good", ".", "[SEP]")
    assert qnli.token_type_ids[0].tolist() == [0] * 6 + [1] * 6 + [0] * 4
    assert qnli.labels.tolist() == [0, 1]  # entailment, not_entailment
    qqp = load_glue("qqp", write_task(tmp_path / "qqp", QQP), "test", tokenizer=tmp_path / "qqp" / "vocab.txt",
                    max_len=7)
    assert qqp.input_ids.tolist() == [ids("[CLS]", "what", "is", "[SEP]", "who", "is", "[SEP]")]
    assert qqp.labels.tolist() == [0]
    assert set(qqp.tensors()) == {"input_ids", "attention_mask", "token_type_ids", "labels"}


def test_named_glue_task_through_the_loaders(tmp_path):
    pytest.importorskip("transformers")
    root = write_task(tmp_path, SST2, dev="sentence\tlabel\nthe film\t0\n")
    assert data.model_args("sst2", root) == {"num_classes": 2, "vocab_size": len(WORDS), "max_len": 128}
    test = data.get_dataset("SST2", "test", root=root)
    assert test.labels.tolist() == [0] and test.input_ids.shape == (1, 128)
    (x, y), = list(data.make_loader(data.get_dataset("sst2", "train", root=root), 8))
    assert x.shape == (3, 128) and y.tolist() == [1, 0, 1]


@pytest.mark.parametrize("train, message", [
    ("sentence\tlabel\na film\t2\n", r"train.tsv line 2: label '2' is not one of 0, 1"),
    ("sentence\tlabel\na film\t1\na\tgood\t0\n", "line 3: 3 fields, its header has 2"),
    ("text\tlabel\na film\t1\n", "has no column 'sentence'; its header is"),
    ("sentence\tlabel\n", "holds no examples"),
    ("", "has no column 'sentence', 'label'"),
])
def test_bad_files_are_one_line_data_errors(tmp_path, train, message):
    with pytest.raises(DataError, match=message) as e:
        load_glue("sst2", write_task(tmp_path, train), "train", tokenizer=WordTokenizer())
    assert "\n" not in str(e.value)


def test_bad_paths_tasks_and_splits(tmp_path):
    root = write_task(tmp_path / "t", SST2, vocab=False)
    with pytest.raises(DataError, match="does not exist"):
        load_glue("sst2", tmp_path / "missing", tokenizer=WordTokenizer())
    (root / "dev.tsv").unlink()
    with pytest.raises(DataError, match="dev.tsv not found"):
        load_glue("sst2", root, "test", tokenizer=WordTokenizer())
    with pytest.raises(DataError, match="no vocab.txt"):
        load_glue("sst2", root)
    with pytest.raises(DataError, match="unknown GLUE task 'mnli'"):
        load_glue("mnli", root)
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_glue("sst2", root, "valid", tokenizer=WordTokenizer())
    with pytest.raises(errors.OptionError, match="max_len must be an integer >= 2"):
        load_glue("sst2", root, max_len=1, tokenizer=WordTokenizer())
    with pytest.raises(DataError, match="needs --data-root"):
        data.get_dataset("qnli", "train")
    with pytest.raises(DataError, match="text task"):
        data.get_dataset("qqp", "train", root=root, pad_to=32)


def test_a_missing_tokenizer_path_a_short_vocabulary_or_no_package(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    with pytest.raises(DataError, match="tokenizer .*nothing-here not found"):
        glue.tokenizer_from(tmp_path / "nothing-here")
    write_task(tmp_path, SST2)
    with monkeypatch.context() as m:  # a tokenizer that kept only its special tokens
        m.setattr(transformers, "BertTokenizer", lambda vocab: WORDS[:5])
        with pytest.raises(DataError, match="read 5 tokens of the 17 lines of"):
            glue.tokenizer_from(None, tmp_path)
    real = errors.importlib.import_module
    monkeypatch.setattr(errors.importlib, "import_module",
                        lambda name: (_ for _ in ()).throw(ImportError(name)) if name == "transformers" else real(name))
    with pytest.raises(SpikeBridgeError, match=r"pip install 'spikebridge\[transformers\]'"):
        glue.tokenizer_from(tmp_path / "vocab.txt")


def label_of(text: str) -> int:
    """The task's rule, applied to the words: the main clause's adjective, flipped by a negation."""
    def sentiment(words):
        return int((words[-1] in synthetic.POSITIVE) != any(w in synthetic.NEGATIONS for w in words))
    words = text.split()
    for connective, main in (("but", 1), ("although", 0)):
        if connective in words:
            k = words.index(connective)
            return sentiment((words[:k], words[k + 1:])[main])
    return sentiment(words)


def test_synthetic_task_follows_its_rule():
    texts, labels = synthetic.sentences("train")
    assert len(texts) == 10000 and labels == [label_of(t) for t in texts]
    assert 0.45 < np.mean(labels) < 0.55
    forms = [sum(c in t.split() for t in texts) / len(texts) for c in synthetic.CONNECTIVES]
    assert all(0.3 < f < 0.37 for f in forms)
    test_texts, test_labels = synthetic.sentences("test")
    assert len(test_texts) == 2000 and test_labels == [label_of(t) for t in test_texts]
    assert not set(test_texts) & set(texts)


def test_synthetic_task_is_deterministic_and_seeded():
    a, b = synthetic_sentiment("test"), synthetic_sentiment("test")
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.input_ids, synthetic_sentiment("test", seed=1).input_ids)
    assert a.input_ids.shape == (2000, synthetic.MAX_LEN) and a.info == synthetic.INFO
    assert torch.equal(a.attention_mask, (a.input_ids != 0).long())
    assert data.model_args("synthetic_sentiment") == {"num_classes": 2, "vocab_size": len(synthetic.VOCAB),
                                                      "max_len": synthetic.MAX_LEN}
    with pytest.raises(DataError, match="unknown split"):
        synthetic_sentiment("dev")


def test_synthetic_ids_are_a_bert_tokenizers(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "vocab.txt").write_text("\n".join(synthetic.VOCAB) + "\n")
    tokenizer = transformers.BertTokenizer(vocab=str(tmp_path / "vocab.txt"))
    texts = synthetic.sentences("test")[0][:50]
    expected = tokenizer(texts, padding="max_length", max_length=synthetic.MAX_LEN, return_tensors="pt")
    assert torch.equal(synthetic.encode(texts), expected["input_ids"])


def test_image_names_still_refuse_text_options():
    assert data.model_args("fashion-mnist") == {"num_classes": 10, "in_channels": 1}
    assert data.is_text("QQP") and not data.is_text("mnist")
    with pytest.raises(DataError, match="synthetic-sentiment is a text task, not images"):
        data.dataset_info("synthetic-sentiment")
    with pytest.raises(DataError, match="valid names: .*synthetic-sentiment"):
        data.dataset_info("imdb")
