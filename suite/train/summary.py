"""``summary.json`` of an ended run: what a report reads, computed from the metrics history."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from suite.config import TrainConfig
from suite.run.records import RunState

__all__ = ["run_summary"]


def run_summary(
    cfg: TrainConfig,
    *,
    run_id: str,
    state: RunState,
    reason: str | None,
    history: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any],
    seconds: float,
    setup_seconds: float,
    val_images: int,
    occlusion: Mapping[str, Any],
    patch: int,
    machine: Mapping[str, Any],
) -> dict[str, Any]:
    """The summary of an ended (``finished`` or ``pruned``) run.

    Args:
        history: the ``metrics.jsonl`` rows; ``best``: the best evaluated epoch (``TrainState.best``).
        seconds: wall seconds over all sessions of the run, from each one's first step.
        setup_seconds: seconds before the first step, over all sessions (imports, data, model, resume).
        val_images: images of the last evaluation (the n of top-1's binomial error).
        occlusion: the occlusion metrics (empty when not evaluated); ``patch`` their patch side.
        machine: ``device``, ``precision``, ``tf32``, ``threads``, ``processes`` and ``gpus``
            (every GPU of the run, 0 on CPU).

    Raises:
        FloatingPointError: a value is not finite.
    """
    evaluated = [r for r in history if "top1" in r]
    last = evaluated[-1] if evaluated else {}
    images = sum(r["images_per_s"] * r["epoch_seconds"] for r in history)
    train_seconds = sum(r["epoch_seconds"] for r in history)
    best_top1 = best["top1"] if best["epoch"] > 0 else None
    best_ema = best.get("ema_top1")
    summary: dict[str, Any] = {
        "run_id": run_id,
        "status": state.value,
        "name": cfg.name,
        "epochs": len(history),
        "top1": last.get("top1"),
        "top5": last.get("top5"),
        "val_loss": last.get("val_loss"),
        "val_images": val_images,
        "best_top1": best_top1,
        "best_top5": best["top5"] if best_top1 is not None else None,
        "best_epoch": best["epoch"] if best_top1 is not None else None,
        "best_top1_max": max((v for v in (best_top1, best_ema) if v is not None), default=None),
        "wall_seconds": seconds,
        "setup_seconds": setup_seconds,
        "train_seconds": train_seconds,
        "images_per_s": images / max(1e-9, train_seconds),
        "device": machine["device"],
        "precision": machine["precision"],
        "tf32": machine["tf32"],
        "threads": machine["threads"],
        "processes": machine["processes"],
        "gpu_hours": machine["gpus"] * seconds / 3600.0,
        "tokenmix_fallbacks": sum(r.get("tokenmix_fallbacks", 0) for r in history),
        "occlusion_patch": patch if occlusion else None,
        **occlusion,
    }
    if reason is not None:
        summary["prune_reason"] = reason
    if "ema_top1" in last:
        summary.update({"ema_top1": last["ema_top1"], "ema_top5": last["ema_top5"], "best_ema_top1": best_ema})
    if any(not math.isfinite(v) for v in summary.values() if isinstance(v, float)):
        raise FloatingPointError(f"non-finite summary values: {summary}")
    return summary
