"""Data parallelism on CPU with gloo: sharding invariants, 2 processes vs 1, interrupt and resume.

The process tests start real ranks through ``suite train --nproc 2`` (torchrun's variables, gloo).
Tolerance of "2 processes == 1 process": with mixing off and a model without batch-dependent
layers (the ViT has LayerNorm only, no dropout), the ranks' averaged gradients are the
single-process gradient up to float summation order, so top-1/top-5 are equal and losses agree to
1e-5 (measured: about 1e-7).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suite.config import ConfigError, load_config
from suite.data.loaders import EpochSampler, Shard
from suite.device.distributed import Context, Environment, cuda_index, launch_local, master_port, step_seed
from suite.train.occlusion import occlude_patches
from suite.run.records import RunState, read_run
from suite.train.trainer import train
from tests.conftest import TINY
from tests.helpers import hold_env, wait_held

REPO = Path(__file__).resolve().parents[2]
RANK_FAULT_HOOK = REPO / "tests" / "faults_hook"


# -- invariants (no processes) -------------------------------------------------------------------


def test_ranks_together_load_the_single_process_batch() -> None:
    size, batch, world = 70, 8, 2
    steps = size // batch
    one = list(EpochSampler(size, seed=3, epoch=1, shuffle=True, stop=steps * batch))
    shards = [
        list(EpochSampler(size, seed=3, epoch=1, shuffle=True, rank=r, world_size=world, stop=steps * batch // world))
        for r in range(world)
    ]
    per = batch // world
    for step in range(steps):
        union = sorted(item for shard in shards for item in shard[step * per : (step + 1) * per])
        assert union == sorted(one[step * batch : (step + 1) * batch])  # same images, same sample seeds
    # resuming a rank at step 3 continues where it was
    again = list(EpochSampler(size, seed=3, epoch=1, shuffle=True, start=3 * per, rank=1, world_size=world,
                              stop=steps * per))
    assert again == shards[1][3 * per :]


def test_sharded_evaluation_sees_every_image_once_with_the_same_occlusion() -> None:
    size, world, batch = 37, 3, 6
    positions = sorted(i for r in range(world) for i, _ in EpochSampler(size, seed=0, epoch=0, shuffle=False,
                                                                         rank=r, world_size=world))
    assert positions == list(range(size))  # no padding, no duplicates, nothing dropped
    x = torch.randn(size, 3, 8, 8)
    gen = torch.Generator().manual_seed(5)
    single = torch.cat([occlude_patches(x[i : i + batch], 4, 0.5, gen) for i in range(0, size, batch)])
    for rank in range(world):
        shard = Shard(rank, world, batch, size)
        mine = list(range(rank, size, world))
        gen = torch.Generator().manual_seed(5)
        per = batch // world
        parts = [
            occlude_patches(x[mine[k * per : (k + 1) * per]], 4, 0.5, gen, rows=(shard.global_batch(k), rank, world))
            for k in range((len(mine) + per - 1) // per)
        ]
        assert torch.equal(torch.cat(parts), single[mine])


def test_batch_rules_seeds_and_lr_scaling() -> None:
    ctx = Context(Environment(rank=1, world_size=4))
    assert ctx.check_batch(128, mixing=True) == 32
    with pytest.raises(ValueError, match="global batch and does not divide by the 4 processes"):
        ctx.check_batch(130, mixing=False)
    with pytest.raises(ValueError, match="3 images per process, an odd number"):
        ctx.check_batch(12, mixing=True)
    assert step_seed(0, 2, 5, 0) != step_seed(0, 2, 5, 1)
    from suite.run.seeds import derive_seed

    assert step_seed(0, 2, 5, 0) == derive_seed(0, "step", 2, 5)  # one process: seeds as before
    cfg = load_config(None, ["data.batch_size=1024", "optim.lr=5e-4", "optim.lr_scale=linear"])
    assert cfg.optim.effective_lr(cfg.data.batch_size) == pytest.approx(1e-3)
    assert load_config(None, ["optim.lr=5e-4"]).optim.effective_lr(1024) == 5e-4


def test_groups_must_fit_each_process_batch() -> None:
    # The paper's mix.groups=128 with a global batch of 1,024: fine on 8 GPUs, 64 images each on 16.
    assert Context(Environment(world_size=8)).check_batch(1024, mixing=True, groups=128) == 128
    sixteen = Context(Environment(rank=3, world_size=16, local_world_size=8))
    with pytest.raises(ValueError) as err:
        sixteen.check_batch(1024, mixing=True, groups=128)
    message = str(err.value)
    for part in ("mix.groups=128", "data.batch_size=1024", "16 processes", "64 images per process",
                 "mix.groups=64", "data.batch_size=2048"):
        assert part in message, part
    with pytest.raises(ValueError, match="fix: mix.groups=16 "):  # largest even divisor of 48 up to 20
        Context(Environment(world_size=2)).check_batch(96, mixing=True, groups=20)
    assert sixteen.check_batch(1024, mixing=False, groups=128) == 64  # groups only matter when mixing
    assert Context(Environment()).check_batch(1024, mixing=True, groups=128) == 1024  # one process


def test_each_rank_gets_its_own_gpu() -> None:
    # every rank sees the node's GPUs (torchrun, srun without GPU binding): one per local rank
    assert [cuda_index(r, 8, 8) for r in range(8)] == list(range(8))
    # SLURM bound one GPU to each task: CUDA_VISIBLE_DEVICES has one entry, it is cuda:0
    assert [cuda_index(r, 8, 1, bound=True) for r in range(8)] == [0] * 8
    assert cuda_index(0, 1, 1) == 0  # one process, one GPU
    # fewer GPUs than ranks that share them: an error before NCCL finds two ranks on one GPU
    with pytest.raises(ValueError, match="8 processes on this node but 4 GPU"):
        cuda_index(5, 8, 4)
    with pytest.raises(ValueError, match="2 processes on this node but 1 GPU"):
        cuda_index(1, 2, 1)  # torchrun / --nproc 2 on a one-GPU machine: not bound per rank
    with pytest.raises(ValueError, match="sees no GPU"):
        cuda_index(0, 1, 0)


def test_rendezvous_port_comes_from_the_job_not_an_inherited_master_port() -> None:
    inherited = {"MASTER_PORT": "29500"}  # exported into every job of the node
    ports = {master_port(str(job), inherited) for job in range(4100, 4108)}
    assert len(ports) == 8 and 29500 not in ports  # jobs sharing a node do not meet
    assert all(20000 <= p < 60000 for p in ports)
    assert master_port("4100", {}) == master_port("4100", inherited)  # every task of a job agrees
    assert master_port("12_3", {}) == master_port("12_3", {}) != master_port("12_4", {})
    assert master_port("4100", {"SUITE_MASTER_PORT": "31000"}) == 31000  # the user's explicit choice
    with pytest.raises(ValueError, match="SUITE_MASTER_PORT='x'"):
        master_port("4100", {"SUITE_MASTER_PORT": "x"})


def test_ranks_share_the_cpus_of_one_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    # torchrun (or --nproc 4) inside one SLURM task of 8 CPUs: its 4 ranks divide them
    torchrun = Context(Environment(rank=1, local_rank=1, world_size=4, local_world_size=4, source="torchrun"))
    assert torchrun.threads() == 2
    # each rank a SLURM task of its own: its own 8 CPUs
    task = Context(Environment(rank=1, local_rank=1, world_size=4, local_world_size=4, slurm_task=True))
    assert task.threads() == 8
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert torchrun.threads() == 4  # no SLURM: the 16 CPUs of the mask
    assert Context(Environment()).threads() is None  # one process: configure_threads takes the allocation


# -- real processes ------------------------------------------------------------------------------


def _overrides(root: Path, *extra: str) -> list[str]:
    return [*TINY, f"run.output_root={root}", *extra]


def _launch(overrides: list[str]) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return launch_local(["train", *overrides, "--no-progress"], 2, env=env)


def test_two_processes_train_one_run_equal_to_one_process(tmp_path: Path) -> None:
    extra = ("mix.method=none", "run.log_every=2")
    one = train(load_config(None, _overrides(tmp_path / "one", *extra)))
    assert _launch(_overrides(tmp_path / "two", *extra)) == 0
    (run_dir,) = [p for p in (tmp_path / "two").iterdir()]  # one run directory
    assert run_dir.name == one.run_id  # the world size is not part of the experiment's id
    record = read_run(run_dir)
    assert record.state is RunState.FINISHED
    two = record.summary
    assert two["processes"] == 2 and one.summary["processes"] == 1
    for key in ("top1", "top5", "occ50_top1", "best_top1"):
        assert two[key] == one.summary[key], key
    assert two["val_loss"] == pytest.approx(one.summary["val_loss"], abs=1e-5)
    rows_one = read_run(one.run_dir).metrics
    for a, b in zip(rows_one, record.metrics):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert (a["top1"], a["lr"]) == (b["top1"], b["lr"])
    assert len(record.metrics) == 2
    config = json.loads(run_dir.joinpath("config.json").read_text())
    assert config["effective"] == {"global_batch": 32, "lr": 1e-3, "processes": 2}


def _children(pid: int) -> dict[int, int]:
    """rank -> pid of a launcher's rank processes."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            ranks = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RANK=")]
            if ranks:
                found[int(ranks[0])] = int(child)
    return found


def test_interrupting_one_rank_stops_all_and_resumes_exactly(tmp_path: Path) -> None:
    # TokenMix's switch branch and masks drawn per rank: resume must still be exact.
    extra = ("mix.method=cutmix", "data.train_size=512", "schedule.epochs=3", "run.log_every=2")
    assert _launch(_overrides(tmp_path / "ref", *extra)) == 0
    (ref_dir,) = list((tmp_path / "ref").iterdir())
    reference = read_run(ref_dir)

    root = tmp_path / "cut"
    cmd = [sys.executable, "-m", "suite.cli", "train", *_overrides(root, *extra), "--no-progress", "--nproc", "2"]
    held = tmp_path / "held"
    # rank 1 waits after step 4 of epoch 2 (rank 0 at the next all-reduce) until it is signalled
    launcher = subprocess.Popen(cmd, env=hold_env(held, (1, 3), rank=1), cwd=REPO)
    log = root / ref_dir.name / "train.log"
    (pid,) = wait_held(held, launcher)
    assert pid == _children(launcher.pid)[1]
    os.kill(pid, signal.SIGTERM)  # one rank only
    assert launcher.wait(timeout=240) == 75  # interrupted, both ranks
    text = log.read_text()
    assert text.count("checkpoint at epoch") == 1  # one checkpoint, written by rank 0
    assert read_run(root / ref_dir.name).state is RunState.INTERRUPTED
    where = re.search(r"checkpoint at epoch (\d+) step (\d+)", text)
    assert where, text  # within epoch 2, at the first log_every boundary both ranks agreed on
    assert (int(where.group(1)), int(where.group(2))) == (1, 4)

    assert _launch(_overrides(root, *extra)) == 0
    resumed = read_run(root / ref_dir.name)
    assert f"resuming {ref_dir.name} at epoch" in log.read_text()
    for key in ("top1", "top5", "val_loss", "occ50_top1"):
        assert resumed.summary[key] == reference.summary[key], key
    for a, b in zip(reference.metrics, resumed.metrics):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-9)


@pytest.mark.parametrize("failing", [1, 0])
def test_a_failing_rank_records_its_failure_and_ends_the_run(tmp_path: Path, failing: int) -> None:
    # An out-of-memory on one rank: the run is failed (not interrupted), failure.json names that
    # rank and its error, and the other rank's consequent error (a collective that lost its
    # peer) replaces neither.
    root = tmp_path / "runs"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(RANK_FAULT_HOOK), str(REPO)]),
        "FAULT_RANK": str(failing),
        "FAULT_STEP": "2",
    }
    cmd = [sys.executable, "-m", "suite.cli", "train", *_overrides(root), "--no-progress", "--nproc", "2"]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    (run_dir,) = list(root.iterdir())
    record = read_run(run_dir)
    assert record.state is RunState.FAILED
    failure = record.failure
    assert (failure["rank"], failure["processes"]) == (failing, 2)
    assert failure["error"] == "OutOfMemoryError" and f"injected on rank {failing}" in failure["message"]
    assert "injected" in failure["traceback"]
    assert f"rank {failing} of 2 failed: OutOfMemoryError" in (run_dir / "train.log").read_text()


def test_a_busy_run_stops_every_rank_at_once(tmp_path: Path) -> None:
    from suite.config import run_id
    from suite.run.records import RunPaths, run_lock

    overrides = _overrides(tmp_path)
    paths = RunPaths.of(tmp_path, run_id(load_config(None, overrides)))
    cmd = [sys.executable, "-m", "suite.cli", "train", *overrides, "--no-progress", "--nproc", "2"]
    with run_lock(paths):  # another trainer of the same run holds it
        # rank 0 is refused and rank 1 learns it: no wait at a collective (a hang meets the timeout)
        done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True,
                              text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    assert not paths.checkpoint.exists()


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def test_gradient_accumulation_trains_as_the_whole_batch(tmp_path: Path) -> None:
    # with mixing: the batch is mixed whole, then split (without mixing: the two-process test below)
    extra = ("mix.method=cutmix", "run.log_every=2", "eval.occlusion=[]")
    whole = train(load_config(None, _overrides(tmp_path / "whole", *extra)))
    halves = train(load_config(None, _overrides(tmp_path / "halves", *extra, "optim.accum_steps=2")))
    assert halves.run_id == whole.run_id  # how a run executes is not part of its id
    for a, b in zip(read_run(whole.run_dir).metrics, read_run(halves.run_dir).metrics):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert (a["top1"], a["lr"]) == (b["top1"], b["lr"])  # the schedule steps per optimiser step
    for name, value in _weights(whole.run_dir).items():
        torch.testing.assert_close(_weights(halves.run_dir)[name], value, atol=2e-5, rtol=1e-4, msg=name)


def test_accumulation_with_repeated_augmentation_resumes_exactly(tmp_path: Path) -> None:
    from tests.helpers import StopAfter

    extra = ("mix.method=tokenmix", "mix.mixup_alpha=0", "optim.accum_steps=2", "data.repeated_aug=3",
             "eval.occlusion=[]")
    reference = train(load_config(None, _overrides(tmp_path / "ref", *extra)))
    cfg = load_config(None, _overrides(tmp_path / "int", *extra))
    assert train(cfg, stop=StopAfter(3)).state is RunState.INTERRUPTED  # mid-epoch, between optimiser steps
    resumed = train(cfg)
    assert [r["train_loss"] for r in read_run(resumed.run_dir).metrics] == [
        r["train_loss"] for r in read_run(reference.run_dir).metrics
    ]
    assert resumed.summary["top1"] == reference.summary["top1"]


def test_gradient_accumulation_over_two_processes_equals_one_process(tmp_path: Path) -> None:
    extra = ("mix.method=none", "run.log_every=2", "eval.occlusion=[]")
    one = train(load_config(None, _overrides(tmp_path / "one", *extra)))
    assert _launch(_overrides(tmp_path / "two", *extra, "optim.accum_steps=2")) == 0  # 8 images per micro-batch
    record = read_run(tmp_path / "two" / one.run_id)
    assert record.state is RunState.FINISHED and record.summary["processes"] == 2
    assert record.summary["top1"] == one.summary["top1"]
    for name, value in _weights(one.run_dir).items():
        torch.testing.assert_close(_weights(record.paths.root)[name], value, atol=2e-5, rtol=1e-4, msg=name)


def test_accumulation_that_does_not_divide_the_batch_is_refused() -> None:
    with pytest.raises(ConfigError, match="optim.accum_steps=3 must divide data.batch_size=32"):
        load_config(None, [*TINY, "optim.accum_steps=3"])
    from suite.device.batch_split import accumulation_problem

    problem = accumulation_problem(32, 4, 16)  # 8 images per process cannot make 16 micro-batches
    assert problem is not None and "optim.accum_steps=8" in problem
