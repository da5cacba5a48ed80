"""Multi-process training: a 2-process gloo run under torchrun, and the single-process fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from rcnn_lab.engine import distributed
from rcnn_lab.engine.distributed import DistInfo

# each rank starts from other weights (DDP must broadcast rank 0's), trains 3 iterations into
# its own folder (only rank 0's may appear) and writes a hash of its final state_dict
WORKER = textwrap.dedent(
    """
    import hashlib, os, sys, torch
    from rcnn_lab.data import ShapesDataset
    from rcnn_lab.engine import build_model, train

    out, rank = sys.argv[1], int(os.environ["RANK"])
    torch.manual_seed(rank)
    model = build_model("fasterrcnn_small_fpn", num_classes=7, widths=(4, 8, 8, 8, 8),
                        fpn_channels=8, representation_size=16, min_size=64, max_size=64)
    result = train(model, ShapesDataset("train", 8, image_size=64),
                   val_data=ShapesDataset("val", 2, image_size=64), iterations=3, batch_size=2,
                   lr=0.01, warmup_iters=1, log_every=1, progress=False,
                   out_dir=f"{out}/rank{rank}")
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + tensor.numpy().tobytes())
    with open(f"{out}/hash{rank}.txt", "w") as f:
        f.write(f"{digest.hexdigest()} {result.iteration} {result.best_ap is not None}")
    """
)


def test_two_process_gloo_run(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(script), str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = (tmp_path / "hash0.txt").read_text().split()
    rank1 = (tmp_path / "hash1.txt").read_text().split()
    assert rank0[0] == rank1[0]  # identical weights and BatchNorm statistics
    assert rank0[1:] == ["3", "True"] and rank1[1:] == ["3", "False"]  # rank 0 evaluated
    assert (tmp_path / "rank0" / "last.pt").is_file()
    assert (tmp_path / "rank0" / "metrics.jsonl").is_file()
    assert not (tmp_path / "rank1").exists()  # rank 1 wrote nothing


def test_single_process_fallbacks(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.setup("cpu")
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, info) is model
    values = torch.tensor([1.0, 2.0])
    reduced = distributed.all_reduce_mean(values)
    assert torch.equal(reduced, values) and reduced is not values
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    distributed.barrier(), distributed.broadcast_buffers(model), distributed.cleanup(info)


def test_sampler_order_depends_only_on_seed_and_epoch():
    data = list(range(10))

    def order(rank: int, world: int, epoch: int, seed: int = 3) -> list[int]:
        info = DistInfo(rank, world, rank, torch.device("cpu"), initialized_here=False)
        sampler = distributed.make_sampler(data, seed, info)
        sampler.set_epoch(epoch)
        return list(sampler)

    torch.manual_seed(0)
    first = order(0, 1, epoch=0)
    torch.manual_seed(1)  # the global RNG plays no part
    assert order(0, 1, epoch=0) == first and sorted(first) == data
    assert order(0, 1, epoch=1) != first
    assert sorted(order(0, 2, 0) + order(1, 2, 0)) == data  # two ranks split one permutation
