"""The exported files in the real importers, unpatched: snnTorch and Norse (one environment, the
``[nir]`` extra) and sinabs (its own: it pins nir 1.0.4, the oldest nir spikebridge declares,
under which the export itself runs there). Each environment is this Python with
``--system-site-packages`` plus the pinned importers, created once and cached in the temporary
directory (or this Python itself when it has them); a test is skipped only when pip cannot
install them."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

import spikebridge as sb
from spikebridge.export.importers import IMPORTERS, compare
from spikebridge.export.nir import export_nir
from spikebridge.export.targets import emulate

from test_nir_export import SHAPE, Residual, grouped, make_snn, plain

ROOT = Path(__file__).resolve().parents[2]
ENVS = {  # environment -> the importers it holds
    "snntorch-norse": ("snntorch", "norse"),
    "sinabs": ("sinabs",),
}
pytestmark = pytest.mark.slow


def requirements(env: str) -> list[str]:
    return sorted({r for name in ENVS[env] for r in IMPORTERS[name].requirements})


def has(requirement: str) -> bool:
    name, version = requirement.split("==")
    try:
        return metadata.version(name) == version
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="session", params=sorted(ENVS))
def env(request) -> tuple[str, str]:
    """(environment name, its python)."""
    name, reqs = request.param, requirements(request.param)
    if all(has(r) for r in reqs):
        return name, sys.executable
    key = hashlib.sha256(" ".join([sys.executable, torch.__version__, *reqs]).encode()).hexdigest()[:12]
    home = Path(tempfile.gettempdir()) / "spikebridge-nir-envs" / f"{name}-{key}"
    python = home / "bin" / "python"
    if not (home / "ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(home)], check=True)
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
                             capture_output=True, text=True)
        if pip.returncode:
            last = (pip.stderr.strip().splitlines() or ["pip failed"])[-1]
            pytest.skip(f"cannot install {' '.join(reqs)} (no network?): {last}")
        (home / "ready").touch()
    found = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == torch.__version__, f"installing {reqs} changed torch to {found}"
    return name, str(python)


def run(python: str, *args: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    done = subprocess.run([python, *args], capture_output=True, text=True, env=environ, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


EXPORT = ("import sys, spikebridge as sb; from spikebridge.export.nir import export_nir; "
          "import nir; print(nir.__version__); "
          "export_nir(sb.load(sys.argv[1]), sys.argv[2], (1, 12, 12), target=sys.argv[3])")


@pytest.mark.parametrize("model", [plain, Residual, grouped])
def test_importers_run_the_file_as_emulated(env, model, tmp_path):
    name, python = env
    T = 6
    snn = make_snn(model(), T=T)
    sb.save(snn, tmp_path / "snn.pt")
    x = torch.rand(8, *SHAPE)
    np.save(tmp_path / "x.npy", x.numpy())
    for importer in ENVS[name]:
        path = tmp_path / f"{importer}.nir"
        if name == "sinabs":  # exported where sinabs lives: under nir 1.0.4
            assert run(python, "-c", EXPORT, str(tmp_path / "snn.pt"), str(path), importer).stdout.strip() == "1.0.4"
            here = export_nir(snn, None, SHAPE, target=importer)
            there = nir.read(path)
            assert sorted(there.nodes) == sorted(here.nodes) and sorted(there.edges) == sorted(here.edges)
        else:
            export_nir(snn, path, SHAPE, target=importer)
        done = run(python, "-m", "spikebridge.export.importers", importer, str(path), str(tmp_path / "x.npy"),
                   str(T), str(tmp_path / "out.npy"))
        out = torch.from_numpy(np.load(tmp_path / "out.npy"))
        with torch.no_grad():
            check = compare(out, emulate(snn, importer).simulate(x).logits, done.stdout.strip())
        assert check.agree == check.total and check.max_diff < 1e-4, check.line()


def test_declared_versions_are_the_tested_ones():
    """pyproject's nir lower bound is sinabs's nir (the oldest environment tested above), and
    the [nir] extra installs the snnTorch and Norse that are tested."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    nir_req = next(r for r in project["dependencies"] if r.startswith("nir"))
    assert nir_req == "nir>=" + next(r for r in IMPORTERS["sinabs"].requirements if r.startswith("nir==")).split("==")[1]
    extra = {r.split(">=")[0]: r.split(">=")[1] for r in project["optional-dependencies"]["nir"]}
    pins = dict(r.split("==") for name in ENVS["snntorch-norse"] for r in IMPORTERS[name].requirements)
    assert extra == {k: v for k, v in pins.items() if k != "nir"}
