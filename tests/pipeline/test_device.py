"""Devices: every command takes --device (default: CUDA when available, else the CPU) and the
Python API takes device= where data is moved; asking for CUDA where there is none is a
one-line error. (Tests run on the CPU; nothing here needs a GPU.)"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge import OptionError
from spikebridge.analysis.evaluation import evaluate_snn
from spikebridge.cli import main
from spikebridge.device import resolve_device

NO_CUDA = not torch.cuda.is_available()


def test_auto_is_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA: the refusal cannot be observed")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_an_option_error(name):
    with pytest.raises(OptionError, match="CUDA is not available here; use --device cpu"):
        resolve_device(name)


def test_unknown_device_names_the_valid_ones():
    with pytest.raises(OptionError, match="use cpu, cuda or cuda:N"):
        resolve_device("gpu0")


def _relu_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 16, 3)).eval()


def test_api_device_argument_gives_the_same_results():
    net = _relu_net()
    data = [(torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    snn = sb.convert(net, "max-norm", T=4, calibration_data=data, device="cpu")
    same = sb.convert(net, "max-norm", T=4, calibration_data=data)
    x = data[0][0]
    assert torch.equal(snn(x), same(x))
    assert evaluate_snn(snn, data, [1, 4], progress=False, device="cpu").accuracy == \
        evaluate_snn(same, data, [1, 4], progress=False).accuracy
    sb.ftbc(snn, ann=net, data=data, batches=2, check_batches=0, progress=False, device="cpu")
    qann = sb.prepare(_relu_net(), levels=4, threshold=1.0)
    report = sb.verify(qann, sb.convert(qann, "pasc", device="cpu"), x, device="cpu")
    assert report.images == 8
    stats = sb.calibration_statistics(net, data, device="cpu")
    assert sorted(stats.sites) == sorted(snn.neurons())


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "1", "--out", "{tmp}/run", "--device", "cuda"],
    ["convert", "{tmp}/missing.pt", "--method", "pasc", "-o", "{tmp}/s.sb", "--device", "cuda"],
    ["evaluate", "{tmp}/missing.pt", "--device", "cuda"],
    ["verify", "{tmp}/missing.pt", "--device", "cuda"],
    ["report", "{tmp}/missing.pt", "--device", "cuda"],
    ["al", "{tmp}/missing.pt", "--levels", "2,4", "--device", "cuda"],
    ["calibrate", "ftbc", "{tmp}/s.sb", "--ckpt", "{tmp}/c.pt", "-o", "{tmp}/o.sb", "--device", "cuda"],
    ["finetune", "{tmp}/s.sb", "-o", "{tmp}/o.sb", "--device", "cuda"],
    ["demo", "--out", "{tmp}/demo", "--device", "cuda"],
    ["export", "{tmp}/s.sb", "--nir", "{tmp}/s.nir", "--device", "cuda"],
], ids=lambda a: a[0])
def test_every_command_takes_device_and_refuses_missing_cuda_in_one_line(argv, tmp_path, capsys):
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "CUDA is not available here; use --device cpu" in err


PAGE_FAULTS = """
import resource, sys, torch
from torch import nn
import spikebridge as sb
if sys.argv[1] == "keep":
    assert sb.keep_freed_memory()
torch.manual_seed(0)
net = nn.Sequential(*[m for _ in range(4) for m in (nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())]).eval()
x = torch.randn(32, 16, 32, 32)  # 2 MiB activations
with torch.no_grad():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        net(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_keep_freed_memory_stops_page_faults_on_reallocation():
    """With glibc's defaults, freed multi-MiB blocks go back to the system and every new
    tensor of that size faults its pages in again; after keep_freed_memory() they are reused."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])
    pages = 5 * 12 * (2 << 20) // 4096  # 5 passes, 12 new activations of 2 MiB each
    assert faults("default") > pages / 4  # measured: 16 544–40 185 faults
    # measured: 0, or 512 per 2 MiB block the heap grows by (up to 1536 on CI's machine)
    assert faults("keep") < pages / 8
