"""Job arrays stay under MaxArraySize: the split, and a 2,500-run submission with sbatch faked."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from jobs.arrays import plan_arrays, split_arrays
from jobs.launch import launch
from sweeps.spec import load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


@pytest.mark.parametrize("count", [1, 999, 1000, 1001, 1002, 2500, 5000])
@pytest.mark.parametrize("max_array_size", [1, 10, 1001])
def test_split_keeps_every_index_below_max_array_size(count: int, max_array_size: int) -> None:
    chunks = split_arrays(count, max_array_size=max_array_size, max_parallel=256)
    assert all(c.max_index <= max_array_size - 1 for c in chunks)
    assert sum(c.size for c in chunks) == count
    assert [c.start for c in chunks] == [i * max_array_size for i in range(len(chunks))]
    assert len(chunks) == -(-count // max_array_size)  # as few sbatch calls as possible
    assert sum(c.parallelism for c in chunks) <= max(256, len(chunks))
    assert all(1 <= c.parallelism <= c.size for c in chunks)


def test_groups_never_share_an_array() -> None:
    chunks = plan_arrays([3, 1002, 5], max_array_size=1001, max_parallel=8)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 1004), (1004, 1005), (1005, 1010)]
    assert sum(c.parallelism for c in chunks) <= 8  # a one-run array cannot use its full share


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_array_size must be >= 1, but got max_array_size=0"):
        split_arrays(3, max_array_size=0, max_parallel=1)
    with pytest.raises(ValueError, match="max_parallel must be >= 1"):
        split_arrays(3, max_array_size=10, max_parallel=0)


FAKE_SBATCH = """#!/bin/bash
# Stands in for sbatch: counts calls, keeps each submitted script, never queues anything.
n=$(( $(cat "{dir}/count" 2>/dev/null || echo 0) + 1 )); echo $n > "{dir}/count"
if [ "$1" = "--test-only" ]; then echo "sbatch: Job $n to start at now using 1 processors" >&2; exit 0; fi
cp "$1" "{dir}/script-$n.sh"
echo "Submitted batch job $(( 900000 + n ))"
"""


@pytest.mark.slurm
def test_2500_runs_split_into_arrays_under_max_array_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real scontrol (MaxArraySize) and sinfo (resources); only sbatch is replaced."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    record.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(FAKE_SBATCH.format(dir=record))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            "big",
            seeds=list(range(2500)),
            resources={"gpus_per_node": 1, "cpus_per_task": 1, "mem_gb": 1},
        )
    )
    report = launch(sweep, executor="slurm", max_parallel=64)
    assert len(report.submitted) == 2500 and report.sbatch_calls == 3
    arrays = []
    for script in sorted(record.glob("script-*.sh")):
        match = re.search(r"^#SBATCH --array=0-(\d+)%(\d+)$", script.read_text(), re.MULTILINE)
        assert match, script.read_text()
        arrays.append((int(match.group(1)), int(match.group(2))))
    assert arrays == [(1000, 22), (1000, 21), (497, 21)]  # indexes 0..1000 at most; %P adds up to 64
    assert int((record / "count").read_text()) == 4  # one --test-only check + one sbatch per array
    jobs = {entry.job_id for entry in load_state(sweep).runs.values()}
    assert len(jobs) == 2500 and max(int(j.split("_")[1]) for j in jobs) == 1000


def load_state(sweep):
    from jobs.sweep_state import SweepState

    return SweepState.read(sweep.state_file)
