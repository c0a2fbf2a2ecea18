"""The README works as written: its Python block and its command lines run in order on small
stand-ins for the demo's networks (same model, a few hundred images instead of 30 000), with
limits on the images each command uses appended to its line; its install commands are the ones
CI runs; it cites no file outside the repository."""
import contextlib
import io
import os
import re
import shlex
from pathlib import Path

import pytest

from spikebridge.cli import main
from spikebridge.train.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

# Appended to each command of the README (argparse keeps the last value of an option given twice).
LIMITS = {
    "train": ["--epochs", "1", "--limit-train", "256", "--limit-test", "128", "--no-progress"],
    "convert": ["--calibration-images", "256"],
    "evaluate": ["--limit", "200"],
    "verify": ["--limit", "200"],
    "calibrate": ["--batches", "1", "--batch-size", "32"],
    "finetune": ["--limit", "256", "--test-limit", "200", "--no-progress"],
    "report": ["--limit", "200"],
    "export": [],
}


def _section(heading: str) -> str:
    """The README from ``heading`` to the next heading of the same or a higher level (lines in
    code blocks are not headings)."""
    level = len(heading.split()[0])
    lines, inside, fenced = [], False, False
    for line in README.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        is_heading = not fenced and re.match(r"#+ ", line)
        if inside and is_heading and len(line.split()[0]) <= level:
            break
        inside = inside or line == heading
        if inside:
            lines.append(line)
    assert lines, heading
    return "\n".join(lines) + "\n"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    lines = block.replace("\\\n", " ").splitlines()
    return [argv for argv in (shlex.split(line, comments=True) for line in lines) if argv]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A directory laid out as after `spikebridge demo`: runs/demo/last.pt (QCFS small_cnn,
    L = 7) and runs/demo/relu/last.pt (its ReLU copy), trained on 512 images; the working
    directory while the module's tests run."""
    folder = tmp_path_factory.mktemp("clone")
    for levels, out in ((7, "runs/demo"), (None, "runs/demo/relu")):
        train(TrainConfig(model="small_cnn", model_kwargs={"width": 8}, levels=levels, epochs=1, limit_train=512,
                          limit_test=256, augment=False, out=str(folder / out)), progress=False)
    old = os.getcwd()
    os.chdir(folder)
    yield folder
    os.chdir(old)


def _run(argv: list[str]) -> str:
    assert argv[0] == "spikebridge", argv
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv[1:] + LIMITS[argv[1]])
    assert rc == 0, f"{shlex.join(argv)} failed:\n{err.getvalue()}"
    return out.getvalue()


def test_first_two_commands_install_and_run_the_demo_and_the_tests_as_ci_does():
    first = _blocks(README, "bash")[0]
    demo, tests = [line for line in first.splitlines() if line and not line.startswith("#")]
    assert demo == ("apt-get update && apt-get install -y dataset-fashion-mnist && pip install torch==2.14.1 "
                    "torchvision==0.29.1 && pip install -e . && spikebridge demo")
    assert tests == 'pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ".[test]" && python -m pytest -q'
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_cites_only_files_of_the_repository():
    assert "../" not in README
    links = re.findall(r"\]\(([^)#]+)\)", README)
    paths = re.findall(r"`((?:docs|benchmarks|src|tests|\.ci)/[\w./-]*|[A-Z]+\.md)`", README)
    cited = [p for p in links + paths if not p.startswith("http")]
    assert "docs/methods.md" in cited and "docs/architecture.md" in cited and "BENCHMARKS.md" in cited
    for path in cited:
        assert (ROOT / path).exists(), f"README cites {path}, which the repository does not have"


@pytest.mark.filterwarnings("ignore:.*positive activations than kept")  # the subsample notice, as documented
def test_python_block_runs_as_written(demo_dir):
    [block] = _blocks(_section("## Python"), "python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md (Python block)", "exec"), {"__name__": "__readme__"})
    text = out.getvalue()
    pasc, ann = re.search(r"PASC ([\d.]+)%, ANN ([\d.]+)%", text).groups()
    assert pasc == ann                                   # exact conversion
    assert "prediction agreement:" in text and "level mismatches" in text
    assert "data-driven, t = 1..4:" in text and "+ FTBC" in text
    assert "data-driven" in text.split("+ FTBC")[-1]   # sb.methods() printed as a table
    assert (demo_dir / "pasc.pt").is_file()


@pytest.mark.filterwarnings("ignore:.*positive activations than kept")
def test_command_lines_run_in_order_on_the_demo_networks(demo_dir):
    block = _blocks(_section("## Command line"), "bash")[0]   # the second is "Your own network"
    commands = _commands(block)
    assert len(commands) >= 10
    assert all(argv[0] == "spikebridge" for argv in commands)
    outputs = {}
    for argv in commands:
        outputs.setdefault(argv[1], []).append(_run(argv))
    assert "T_eff" in outputs["evaluate"][0]                      # PASC: one row, T_eff
    assert "prediction agreement: 100.00%" in outputs["verify"][0]  # bit-plane, float64
    assert [line.split()[0] for line in outputs["evaluate"][1].splitlines()[2:]] == ["1", "2", "4", "8"]
    assert outputs["finetune"][0].count("test ") == 3             # test accuracy after each stage
    assert all("written to" in out for out in outputs["report"])
    assert outputs["convert"][2].startswith("no --method: converting with 'network-level'")  # the ReLU default
    for name in ("pasc.pt", "qcfs.pt", "qcfs_ftbc.pt", "qcfs_ft.pt", "relu.pt", "relu_ftbc.pt",
                 "runs/report-qcfs/report.md", "runs/report-relu/accuracy.png"):
        assert (demo_dir / name).is_file(), name


def test_own_network_lines_run_in_order(demo_dir):
    [block] = _blocks(_section("### Your own network"), "bash")
    commands = _commands(block)
    # torchrun starts several processes; DistributedDataParallel is tested in tests/train/test_distributed.py
    runnable = [argv for argv in commands if argv[0] != "torchrun"]
    assert len(runnable) == len(commands) - 1
    for argv in runnable:
        _run(argv)
    assert (demo_dir / "r20.nir").is_file()


def test_text_lines_run_in_order(demo_dir):
    pytest.importorskip("transformers")
    [block] = _blocks(_section("### Text and BERT"), "bash")
    outputs = [_run(argv) for argv in _commands(block)]
    assert (demo_dir / "runs/bert-l8/last.pt").is_file()
    assert "prediction agreement: 100.00%" in outputs[-1]  # bit-plane, float64


def test_transformer_lines_run_in_order(demo_dir):
    [block] = _blocks(_section("### Transformers and modern CNNs"), "bash")
    commands = _commands(block)
    assert {argv[1] for argv in commands} == {"train", "verify", "convert", "evaluate"}
    outputs = {}
    for argv in commands:
        outputs.setdefault(argv[1], []).append(_run(argv))
    assert all("prediction agreement: 100.00%" in out for out in outputs["verify"])  # GELU ViT, SiLU/SE CNN
    assert "T_eff" in outputs["evaluate"][0]
    assert [line.split()[0] for line in outputs["evaluate"][1].splitlines()[2:]] == ["8", "16", "32"]
    assert (demo_dir / "vit.pt").is_file() and (demo_dir / "vit-qcfs.pt").is_file()
