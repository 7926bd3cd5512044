"""The one file lock of the jobs package (``flock``: released when its holder exits, however it exits).

Used for one launch per sweep at a time (:mod:`jobs.launch`), for who takes a study's next trial
and for one trial per run folder (:mod:`jobs.tune.worker`).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["file_lock"]


@contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created with its folder) for the ``with`` block.

    Yields True while held. With ``blocking=False`` a lock that another process holds is not
    waited for: the block runs at once with False, holding nothing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
