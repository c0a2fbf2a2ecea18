"""`spikebridge al` (METHODS §7) and PASCAL Alg. 4 (`spikebridge al --train`, run_algorithm4) on
tiny subsets of the real Fashion-MNIST."""
import json

import pytest

import spikebridge as sb
from spikebridge import sites
from spikebridge.train import adaptive
from spikebridge.train.al import load_levels_file
from spikebridge.train.checkpoint import load_ann, load_checkpoint
from spikebridge.cli import main
from spikebridge.data import calibration_subset, get_dataset, make_loader
from spikebridge.errors import SpikeBridgeError
from spikebridge.train.loop import TrainConfig, train


TINY = dict(model="small_cnn", model_kwargs={"width": 8}, batch_size=32, limit_train=256, limit_test=128,
            augment=False)
CLI_TINY = ["--limit-train", "128", "--limit-test", "64", "--batch-size", "32", "--no-augment", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def qcfs_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("qcfs")
    train(TrainConfig(out=str(out), epochs=2, levels=8, threshold=2.0, **TINY), progress=False)
    return out / "last.pt"


def test_al_prints_the_table_and_writes_levels_and_plot(qcfs_checkpoint, tmp_path, capsys):
    levels, png = tmp_path / "levels.json", tmp_path / "al.png"
    assert main(["al", str(qcfs_checkpoint), "--clusters", "3", "--levels", "1,2,4", "--images", "256",
                 "-o", str(levels), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["site", "A", "g", "K", "M", "L"]
    by_site = load_levels_file(levels)
    assert list(by_site) == list(load_checkpoint(qcfs_checkpoint)["levels"])
    assert set(by_site.values()) == {1, 2, 4}  # three clusters, each its own level
    rows = {line.split()[0]: line.split() for line in printed[1:1 + len(by_site)]}
    assert {site: int(row[-1]) for site, row in rows.items()} == by_site
    assert printed[1 + len(by_site)] == f"T_eff = {sum(by_site.values()) / len(by_site):.3f}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_levels_file_round_trips_into_training_and_exact_pasc(qcfs_checkpoint, tmp_path):
    levels = tmp_path / "levels.json"
    assert main(["al", str(qcfs_checkpoint), "--levels", "2,4,8", "--images", "256", "-o", str(levels)]) == 0
    out = tmp_path / "adaptive"
    assert main(["train", "--init-from", str(qcfs_checkpoint), "--levels-file", str(levels), "--out", str(out),
                 "--epochs", "1", *CLI_TINY]) == 0
    by_site = load_levels_file(levels)
    assert load_checkpoint(out / "last.pt")["levels"] == by_site
    qann = load_ann(out / "last.pt").double()
    assert {n: m.levels for n, m in sites(qann).items()} == by_site
    snn = sb.convert(qann, "pasc").double()
    assert snn.info["T_eff"] == pytest.approx(sum(by_site.values()) / len(by_site))
    x, _ = next(iter(make_loader(calibration_subset(get_dataset("fashion-mnist", "test"), 64), 64)))
    report = sb.verify(qann, snn, x.double())
    assert report.images == 64 and report.agreement == 1.0
    assert set(report.mismatches) == set(by_site) and not any(report.mismatches.values())


def test_al_rejects_bad_input(qcfs_checkpoint, tmp_path, capsys):
    assert main(["al", "--levels", "1,2"]) == 2
    assert "give a QCFS checkpoint" in capsys.readouterr().err
    assert main(["al", str(qcfs_checkpoint), "--levels", "1,2", "--epochs", "3"]) == 2
    assert "--epochs only apply with --train" in capsys.readouterr().err
    assert main(["al", str(qcfs_checkpoint), "--clusters", "3", "--levels", "1,2", "-o", str(tmp_path / "l")]) == 2
    assert "3 clusters need 3 levels" in capsys.readouterr().err
    assert main(["al", str(qcfs_checkpoint), "--train", "--levels", "1,2"]) == 2
    assert "give no CKPT" in capsys.readouterr().err


def test_algorithm4_runs_all_stages_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    calls = []

    def counting_train(config, progress=True):
        calls.append(config.out)
        if config.out.endswith(adaptive.STAGE_2) and len(calls) == 2:
            raise KeyboardInterrupt  # killed as stage_2_uniform starts
        return train(config, progress)

    monkeypatch.setattr(adaptive, "train", counting_train)
    options = dict(epochs=1, clusters=2, levels=[2, 4], levels_uniform=8, images=256, progress=False, **TINY)
    with pytest.raises(KeyboardInterrupt):
        adaptive.run_algorithm4(tmp_path, **options)
    stage1, al_json = tmp_path / adaptive.STAGE_1 / "last.pt", tmp_path / "al" / "al.json"
    stamps = (stage1.stat().st_mtime_ns, al_json.stat().st_mtime_ns)
    assert not (tmp_path / adaptive.STAGE_2 / "last.pt").exists()

    result = adaptive.run_algorithm4(tmp_path, **options)
    assert [c.rsplit("/", 1)[-1] for c in calls[2:]] == [adaptive.STAGE_2, adaptive.STAGE_3]  # stage 1 not redone
    assert (stage1.stat().st_mtime_ns, al_json.stat().st_mtime_ns) == stamps
    assert result.levels == load_levels_file(tmp_path / "al" / "levels.json")
    assert set(result.levels.values()) <= {2, 4} and result.t_eff == sum(result.levels.values()) / 4
    assert len(json.loads(al_json.read_text())["metrics"]) == 4
    final = load_checkpoint(result.checkpoints[adaptive.STAGE_3])
    assert final["levels"] == result.levels and final["epoch"] == 1
    # step 4 continues from step 3 (its weights and θ), at the AL levels
    assert final["args"]["init_from"] == str(tmp_path / adaptive.STAGE_2 / "last.pt")
    assert set(result.test_acc) == {adaptive.STAGE_1, adaptive.STAGE_2, adaptive.STAGE_3}

    adaptive.run_algorithm4(tmp_path, **options)  # everything done: nothing is trained again
    assert len(calls) == 4
    with pytest.raises(SpikeBridgeError, match="AL levels computed with"):
        adaptive.run_algorithm4(tmp_path, **dict(options, clusters=1, levels=[2]))
    with pytest.raises(SpikeBridgeError, match="stage_1_uniform was trained with epochs=1, not 2"):
        adaptive.run_algorithm4(tmp_path, **dict(options, epochs=2))


def test_al_train_cli(tmp_path, capsys):
    out = tmp_path / "al"
    assert main(["al", "--train", "--out", str(out), "--levels", "2,4", "--levels-uniform", "4", "--epochs", "1",
                 "--images", "128", "--limit-train", "128", "--limit-test", "64", "--batch-size", "32",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "T_eff" in printed and "stage_3_adaptive" in printed
    assert load_checkpoint(out / adaptive.STAGE_1 / "last.pt")["levels"] == dict.fromkeys(
        load_levels_file(out / "al" / "levels.json"), 4)
    assert (out / "al" / "al.png").exists()
