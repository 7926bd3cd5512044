"""Where a run's setup time starts: the wall clock of a process before its first training step."""

from __future__ import annotations

import time

__all__ = ["setup_origin"]

_TAKEN: list[bool] = []  # the suite's import time is taken by the first run of a process


def setup_origin() -> float:
    """Where a session's setup began: the suite's import for the process's first run (its imports
    count), else now (a process that runs several, as a tuning worker does)."""
    if _TAKEN:
        return time.time()
    import suite

    _TAKEN.append(True)
    return suite.IMPORTED_AT
