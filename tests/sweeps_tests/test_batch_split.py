"""The batch-split rule: a global batch over a run's processes, as mixing needs it."""

from __future__ import annotations

import pytest

from suite.device.batch_split import batch_split_problem, per_process_batch


@pytest.mark.parametrize(
    ("batch", "processes", "mixing", "groups", "per"),
    [
        (1024, 8, True, 128, 128),  # the paper presets on one 8-GPU node: one group per GPU
        (1024, 1, True, 128, 1024),  # the same optimisation on one GPU: 8 groups
        (1024, 16, True, 64, 64),  # two nodes with the groups halved
        (1024, 16, False, 128, 64),  # no mixing: groups are never used
        (30, 3, False, None, 10),  # no mixing: an odd share is fine
        (32, 2, True, None, 16),  # one draw per process batch
    ],
)
def test_splits_that_train(batch: int, processes: int, mixing: bool, groups: int | None, per: int) -> None:
    assert batch_split_problem(batch, processes, mixing=mixing, groups=groups) is None
    assert per_process_batch(batch, processes, mixing=mixing, groups=groups) == per


def test_groups_larger_than_the_process_batch_name_everything_and_the_fix() -> None:
    problem = batch_split_problem(1024, 16, mixing=True, groups=128, nodes=2, unit="GPUs")
    assert problem is not None
    for part in (
        "mix.groups=128",
        "data.batch_size=1024",
        "16 processes (2 nodes x 8 GPUs)",
        "64 images per process",
        "fix: mix.groups=64",
        "resources.nodes=1 (8 processes, 128 images each)",
        "data.batch_size=2048",
    ):
        assert part in problem, problem


def test_groups_that_do_not_divide_the_process_batch() -> None:
    """96 images per process: groups of 64 leave 32 over; the largest even divisor below 64 is 48."""
    problem = batch_split_problem(768, 8, mixing=True, groups=64, unit="GPUs")
    assert problem is not None and "96 images per process" in problem and "mix.groups=48" in problem
    assert "resources.gpus_per_node=6 (128 images per process)" in problem  # fewer GPUs on one node


def test_a_global_batch_that_does_not_divide() -> None:
    problem = batch_split_problem(1000, 16, mixing=True, nodes=2, unit="GPUs")
    assert problem is not None
    assert "data.batch_size=1000 is the global batch and does not divide by the 16 processes" in problem
    assert "data.batch_size=992 (a multiple of 32)" in problem  # even shares when mixing
    assert "resources.nodes" not in problem  # 1000 / 8 = 125 is odd: one node does not help either
    with pytest.raises(ValueError, match="does not divide"):
        per_process_batch(1000, 16, mixing=False)


def test_an_odd_share_is_refused_only_when_mixing() -> None:
    problem = batch_split_problem(48, 16, mixing=True, nodes=2, unit="GPUs")
    assert problem is not None and "3 images per process, an odd number" in problem
    assert "resources.nodes=1 (8 processes, 6 images each)" in problem
    assert batch_split_problem(48, 16, mixing=False, nodes=2) is None


def test_the_fix_it_suggests_works() -> None:
    for batch, processes, nodes, groups in [(1024, 32, 4, 128), (576, 24, 3, 32), (96, 4, 1, 16)]:
        problem = batch_split_problem(batch, processes, mixing=True, groups=groups, nodes=nodes)
        assert problem is not None
        suggested = int(problem.split("fix: mix.groups=")[1].split(" ")[0])
        assert batch_split_problem(batch, processes, mixing=True, groups=suggested, nodes=nodes) is None


def test_nonsense_counts_are_a_caller_error() -> None:
    with pytest.raises(ValueError, match="nodes dividing processes"):
        batch_split_problem(64, 3, mixing=True, nodes=2)
