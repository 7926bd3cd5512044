"""Seeds derived from names: every random draw of a run is seeded from what it is (run seed, epoch,
step, sample position, rank), so a resumed or re-sharded run draws exactly what it would have."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

__all__ = ["derive_seed", "seed_everything"]


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from any parts (same on every machine and Python version)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
