"""Evaluation: clean top-1/top-5 and occlusion robustness.

Occlusion follows the usual protocol for ViTs (Naseer et al., 2021; the TokenMix paper's
robustness claim): a fixed-seed random fraction of patch cells is blanked at test time and
top-1 is measured. The same seed is used for every run, so runs are compared on the very
same occluded images.

Under data parallelism the loader holds one rank's shard (``loader.shard``, see
:func:`suite.data.eval_loader`): the counts and sums are all-reduced, so every validation image
counts exactly once, and occlusion masks are drawn for the global batch and cut to the rank's
rows, so the occluded images are the single-process ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate", "evaluate_occlusion"]


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    amp: bool = True,
    channels_last: bool = False,
    occlude: tuple[int, float, int] | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over a loader.

    Args:
        occlude: ``(patch, fraction, seed)`` to blank that fraction of patch cells.
    """
    was_training = model.training
    model.eval()
    correct1 = correct5 = count = 0
    loss_sum = 0.0
    gen = None
    shard = getattr(loader, "shard", None)
    for index, (x, y) in enumerate(loader):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if occlude is not None:
            from suite.occlusion import occlude_patches

            patch, fraction, seed = occlude
            if gen is None:
                gen = torch.Generator(device=device).manual_seed(seed)
            x = occlude_patches(x, patch, fraction, gen, rows=None if shard is None else _rows(shard, index))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5.eq(y[:, None])
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += y.numel()
    model.train(was_training)
    if shard is not None:
        from suite.distributed import all_reduce_sum

        correct1, correct5, count, loss_sum = all_reduce_sum([correct1, correct5, count, loss_sum], device)
    if count == 0:
        raise ValueError("evaluation loader is empty")
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count}


def _rows(shard: Any, index: int) -> tuple[int, int, int]:
    """``(global batch size, first row, row step)``: this rank's rows of global batch ``index``."""
    return shard.global_batch(index), shard.rank, shard.world


def evaluate_occlusion(
    model: nn.Module,
    loader: Iterable,
    *,
    fractions: list[float],
    patch: int,
    seed: int,
    device: torch.device,
    amp: bool = True,
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1 with each fraction of patch cells blanked: ``{"occ25_top1": ..., ...}``."""
    results = {}
    for fraction in fractions:
        metrics = evaluate(
            model, loader, device=device, amp=amp, channels_last=channels_last, occlude=(patch, fraction, seed)
        )
        results[f"occ{round(fraction * 100)}_top1"] = metrics["top1"]
    return results
