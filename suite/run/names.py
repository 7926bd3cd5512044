"""The names of the suite's records: files and folders, and the keys of ``summary.json`` and
``metrics.jsonl`` that other packages read. One place, so a reader (reports, sweep status, tuning)
and the writer can never disagree.

Example:
    >>> occlusion_key(0.25), is_occlusion_key("occ50_top1"), is_occlusion_key("top1")
    ('occ25_top1', True, False)
    >>> occlusion_percent("occ50_top1"), is_summary_column("occ75_top1"), is_summary_column("run_id")
    (50, True, False)
"""

from __future__ import annotations

import re

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "CURVE_KEYS",
    "FAILURE_FILE",
    "LOCK_FILE",
    "LOG_FILE",
    "MAPS_META_FILE",
    "METRICS_FILE",
    "PREVIOUS_CHECKPOINT_FILE",
    "RECORD_FILES",
    "STUDY_JOURNAL_FILE",
    "SUBMITIT_DIR",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "SUMMARY_METRICS",
    "SWEEP_STATE_FILE",
    "WANDB_RECORD_FILE",
    "is_occlusion_key",
    "is_summary_column",
    "occlusion_key",
    "occlusion_percent",
]

# -- a run directory ------------------------------------------------------------------------------
CONFIG_FILE = "config.json"  # the resolved config and what the run is (written once)
METRICS_FILE = "metrics.jsonl"  # one row per epoch
SUMMARY_FILE = "summary.json"  # written last: the run ended (finished or pruned)
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"  # the one before, for a damaged checkpoint.pt
FAILURE_FILE = "failure.json"  # the last attempt raised
WANDB_RECORD_FILE = "wandb.json"  # epochs W&B confirmed
LOG_FILE = "train.log"
LOCK_FILE = ".lock"  # held (flock) by the process training the run
# what a run's record and state are read from (in this order: a summary makes the files after
# METRICS_FILE irrelevant to the state)
RECORD_FILES: tuple[str, ...] = (
    CONFIG_FILE, SUMMARY_FILE, METRICS_FILE,
    FAILURE_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, LOCK_FILE,
)

# -- other folders ----------------------------------------------------------------------------------
MAPS_META_FILE = "maps.json"  # an offline-maps directory (or a sweep's maps step) is complete
SUBMITIT_DIR = ".submitit"  # submitit's job folders under an output root
SWEEP_STATE_FILE = "sweep-state.json"
STUDY_JOURNAL_FILE = "study.journal"

# -- keys -----------------------------------------------------------------------------------------
CURVE_KEYS: tuple[str, ...] = ("top1", "top5", "train_loss", "val_loss", "ema_top1")  # per-epoch curves
SUMMARY_METRICS: tuple[str, ...] = (
    "top1", "top5", "best_top1", "best_top5", "best_top1_max", "best_ema_top1", "val_loss",
)

# the values of summary.json a report keeps as columns, besides every occlusion key
SUMMARY_COLUMNS: tuple[str, ...] = (
    "top1", "top5", "best_top1", "best_top5", "best_epoch", "best_top1_max", "ema_top1", "ema_top5",
    "best_ema_top1", "val_loss", "epochs", "gpu_hours", "wall_seconds", "setup_seconds", "train_seconds", "images_per_s",
    "device", "threads", "tokenmix_fallbacks", "prune_reason", "val_images",
)

_OCCLUSION = re.compile(r"^occ(\d+)_top1$")


def occlusion_key(fraction: float) -> str:
    """The summary key of top-1 with ``fraction`` of the patch cells occluded (``occ25_top1``)."""
    return f"occ{round(fraction * 100)}_top1"


def is_occlusion_key(key: str) -> bool:
    """Whether ``key`` is an occlusion top-1 of :func:`occlusion_key`."""
    return bool(_OCCLUSION.match(key))


def occlusion_percent(key: str) -> int:
    """The share of occluded patch cells an occlusion key names, in percent (``occ50_top1`` -> 50).

    Raises:
        ValueError: ``key`` is not an occlusion key.
    """
    match = _OCCLUSION.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not an occlusion key such as {occlusion_key(0.5)!r}")
    return int(match.group(1))


def is_summary_column(key: str) -> bool:
    """Whether a report keeps the summary value ``key``: in :data:`SUMMARY_COLUMNS`, or an occlusion top-1."""
    return key in SUMMARY_COLUMNS or is_occlusion_key(key)
