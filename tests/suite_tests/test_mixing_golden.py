"""Ungrouped TokenMix mixes exactly as it always has: images, targets, fallbacks and RNG state, bit for bit.

Every case runs the trainer's mixer (``build_mixer``) on a fixed batch with fixed seeds and compares
SHA-256 hashes of the mixed images, the soft targets and the state of every random generator the
call may touch (the step's torch generator, numpy's and Python's global ones, which timm's Mixup
branch draws from) with ``golden/tokenmix_ungrouped.json``. A changed hash means runs would mix
differently than before (and a resumed run would no longer match its first part).

The hashes are portable: the teacher maps hold small integers whose positive part sums to 16, so
every partial sum of a normalised map is exact and no result depends on the order of a reduction;
all other arithmetic is elementwise.

Rewrite the golden file only with a deliberate change of the mixing stream:
``SUITE_UPDATE_GOLDEN=1 pytest tests/suite_tests/test_mixing_golden.py`` (it skips, saying so).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import suite  # noqa: F401 - torchvision shim before timm
from suite.config import MixConfig
from suite.mixing.mixer import build_mixer

GOLDEN = Path(__file__).parent / "golden" / "tokenmix_ungrouped.json"
B, C, GRID, SIZE = 8, 10, 4, 16
SEEDS = range(6)
NO_MASS_CLASS = 3  # its map has no positive mass: the teacher targets fall back for it and its partner

_BASE: dict[str, Any] = {"method": "tokenmix", "token_grid": GRID, "mixup_alpha": 0.0}
CASES: dict[str, dict[str, Any]] = {
    "area-block-shared": {"target": "area", "mask_mode": "block"},
    "area-random-per_sample-range": {"target": "area", "mask_mode": "random", "per_sample": True, "mask_ratio": (0.2, 0.7)},
    "area-box-shared": {"target": "area", "mask_mode": "box"},
    "area-box-per_sample": {"target": "area", "mask_mode": "box", "per_sample": True},
    "raw-block-shared": {"target": "teacher_raw", "mask_mode": "block"},
    "raw-block-per_sample-range": {"target": "teacher_raw", "per_sample": True, "mask_ratio": (0.3, 0.8)},
    "norm-random-per_sample": {"target": "teacher_norm", "mask_mode": "random", "per_sample": True},
    "norm-box-shared-nosmooth": {"target": "teacher_norm", "mask_mode": "box", "label_smoothing": 0.0},
    "mixed-block-per_sample": {"target": "mixed", "per_sample": True},
    "mixed-random-shared": {"target": "mixed", "mask_mode": "random"},
    "area-prob-switch": {"target": "area", "prob": 0.5, "mixup_alpha": 0.8, "switch_prob": 0.5},
    "raw-prob-switch-per_sample": {"target": "teacher_raw", "per_sample": True, "prob": 0.7, "mixup_alpha": 0.8},
    "norm-switch-elem": {"target": "teacher_norm", "mask_mode": "random", "mixup_alpha": 0.8, "mode": "elem"},
    "area-switch-pair": {"target": "area", "mixup_alpha": 1.0, "switch_prob": 0.3, "mode": "pair"},
    "mixed-prob-box-per_sample": {"target": "mixed", "mask_mode": "box", "per_sample": True, "prob": 0.6},
}


def _class_maps() -> torch.Tensor:
    """Raw maps ``(C, G, G)`` per class: 16 positive units spread over the cells, negatives elsewhere."""
    gen = torch.Generator().manual_seed(1234)
    maps = torch.zeros(C, GRID * GRID)
    for c in range(C):
        if c == NO_MASS_CLASS:
            maps[c] = -torch.randint(0, 3, (GRID * GRID,), generator=gen).float()
            continue
        cells = torch.randint(0, GRID * GRID, (16,), generator=gen)
        maps[c].index_add_(0, cells, torch.ones(16))
        negative = (maps[c] == 0) & (torch.rand(GRID * GRID, generator=gen) < 0.5)
        maps[c][negative] = -torch.randint(1, 4, (int(negative.sum()),), generator=gen).float()
    return maps.view(C, GRID, GRID)


class _FixedTeacher:
    """Each image's map is its class's fixed raw map (the mixer must pass the unmixed labels)."""

    def __init__(self) -> None:
        self.table = _class_maps()

    def maps(self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None) -> torch.Tensor:
        assert grid == GRID
        return self.table[y]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def _numpy_sha() -> str:
    state = np.random.get_state()
    return _sha(state[1].tobytes() + repr((state[2], state[3], state[4])).encode())


def _run(fields: dict[str, Any], seed: int) -> dict[str, Any]:
    cfg = MixConfig(**(_BASE | fields))
    teacher = None if cfg.target == "area" else _FixedTeacher()
    mixer = build_mixer(cfg, num_classes=C, teacher=teacher)
    data = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(B, 3, SIZE, SIZE, generator=data)
    y = torch.randperm(B, generator=data) % C
    np.random.seed(seed)  # as the trainer's seed_everything: timm's Mixup draws from numpy
    random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    untouched, fresh_numpy = x.clone(), _numpy_sha()
    out, target, stats = mixer(x, y, generator=gen)
    numpy_sha = _numpy_sha()
    branch = "none" if torch.equal(out, untouched) else "mixup" if numpy_sha != fresh_numpy else "tokenmix"
    return {
        "branch": branch,
        "x": _sha(out.contiguous().numpy().tobytes()),
        "target": _sha(target.float().contiguous().numpy().tobytes()),
        "torch_rng": _sha(gen.get_state().numpy().tobytes()),
        "numpy_rng": numpy_sha,
        "python_rng": _sha(repr(random.getstate()).encode()),
        "fallbacks": int(stats.get("fallbacks", 0)),
    }


def _current() -> dict[str, dict[str, Any]]:
    return {f"{name}/{seed}": _run(fields, seed) for name, fields in CASES.items() for seed in SEEDS}


def test_ungrouped_tokenmix_matches_the_golden_file() -> None:
    current = _current()
    if os.environ.get("SUITE_UPDATE_GOLDEN") == "1":  # a rewrite checks nothing: it never passes
        GOLDEN.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"SUITE_UPDATE_GOLDEN=1: {GOLDEN} rewritten, nothing compared; review its diff")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(current) == sorted(golden)
    changed = [key for key in golden if current[key] != golden[key]]
    assert changed == [], f"{len(changed)} of {len(golden)} cases mix differently, first: {changed[:5]}"


def test_the_golden_cases_cover_every_branch_and_the_fallback() -> None:
    """The cases exercise unmixed batches, timm's Mixup branch, TokenMix and the no-mass fallback."""
    golden = json.loads(GOLDEN.read_text())
    assert {case["branch"] for case in golden.values()} == {"none", "mixup", "tokenmix"}
    assert {golden[f"raw-block-shared/{s}"]["fallbacks"] for s in SEEDS} == {2}


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_group_of_the_whole_batch_mixes_as_no_groups(name: str) -> None:
    """Ungrouped TokenMix is the one-group case of the grouped path, bit for bit, in every branch."""
    for seed in SEEDS[:3]:
        ungrouped = _run(CASES[name], seed)
        assert _run(CASES[name] | {"groups": B}, seed) == ungrouped
