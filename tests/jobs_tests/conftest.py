"""Gate for the dispatch tests that need the real local SLURM cluster.

Tests marked ``slurm`` submit to the local cluster (``tools/slurm/local-cluster up``). ``make test``
exports ``SUITE_SLURM=1`` when the cluster is up, or ``SUITE_SLURM_SKIP_REASON`` when it cannot
start here; without ``SUITE_SLURM`` those tests skip with that reason, before any fixture runs.
"""

from __future__ import annotations

import os

import pytest

NO_CLUSTER = "SUITE_SLURM is not set: run `make test`, or `tools/slurm/local-cluster up && export SUITE_SLURM=1`"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``@pytest.mark.slurm`` tests (module fixtures included) unless the cluster is up."""
    if item.get_closest_marker("slurm") and os.environ.get("SUITE_SLURM") != "1":
        pytest.skip(os.environ.get("SUITE_SLURM_SKIP_REASON") or NO_CLUSTER)
