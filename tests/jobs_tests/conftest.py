"""Fixtures for the dispatch tests.

Tests marked ``slurm`` submit to the real local SLURM cluster (``jobs/slurm/local-cluster up``).
``make test`` exports ``SUITE_SLURM=1`` when the cluster is up, or ``SUITE_SLURM_SKIP_REASON``
when it cannot start here; without ``SUITE_SLURM`` those tests skip with that reason.
"""

from __future__ import annotations

import os

import pytest

NO_CLUSTER = "SUITE_SLURM is not set: run `make test`, or `jobs/slurm/local-cluster up && export SUITE_SLURM=1`"


@pytest.fixture(autouse=True)
def _slurm_gate(request: pytest.FixtureRequest) -> None:
    """Skip ``@pytest.mark.slurm`` tests unless the local cluster was brought up for this session."""
    if request.node.get_closest_marker("slurm") and os.environ.get("SUITE_SLURM") != "1":
        pytest.skip(os.environ.get("SUITE_SLURM_SKIP_REASON") or NO_CLUSTER)
