"""torchrun + DDP on CPU (gloo): two ranks train one epoch and end with identical models."""
import os
import subprocess
import sys
import textwrap

import torch

from spikebridge.train import distributed


WORKER = textwrap.dedent("""
    import sys, torch
    from spikebridge.train import distributed
    from spikebridge.train.loop import TrainConfig, train

    out = sys.argv[1]
    model, history = train(TrainConfig(out=out, epochs=1, levels=4, threshold=2.0, batch_size=16, limit_train=64,
                                       limit_test=40, model_kwargs={"width": 4}, augment=True), progress=False)
    torch.save({"state_dict": model.state_dict(), "history": history, "world": distributed.world_size()},
               f"{out}/rank{distributed.rank()}.pt")
    distributed.cleanup()
""")


def test_single_process_helpers_are_no_ops():
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    data = list(range(5))
    assert distributed.shard(data) is data
    model = torch.nn.Linear(2, 2)
    assert distributed.unwrap(distributed.wrap(model, torch.device("cpu"))) is model


def test_two_ranks_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    metrics = [{k: v for k, v in r["history"][0].items() if k != "seconds"} for r in ranks]
    assert metrics[0] == metrics[1]  # losses and accuracies are summed over both ranks
    for key, value in ranks[0]["state_dict"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, ranks[1]["state_dict"][key]), key
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)  # written by rank 0 only
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["state_dict"]["features.0.weight"], ranks[1]["state_dict"]["features.0.weight"])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
