"""Evaluation: clean top-1/top-5 and occlusion robustness.

Occlusion follows the usual protocol for ViTs (Naseer et al., 2021; the TokenMix paper's
robustness claim): a fixed-seed random fraction of patch cells is blanked at test time and
top-1 is measured. Each image's mask depends on its index in the validation set alone
(:class:`suite.train.occlusion.OcclusionMasks`, drawn on the CPU), so every run, on any device and any
number of processes, is compared on the very same occluded images.

The step keeps the GPU fed: correct counts and the loss are summed on the device and read once
per evaluation (one host sync), not once per batch.

Under data parallelism the loader holds one rank's shard (``loader.shard``, see
:func:`suite.data.loaders.eval_loader`): positions ``rank, rank + world, ...`` of the set. The sums are
all-reduced, so every validation image counts exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.device.precision import autocast
from suite.run.names import occlusion_key

__all__ = ["evaluate", "evaluate_epoch", "evaluate_occlusion"]


def _dtype(amp: bool | torch.dtype) -> torch.dtype | None:
    """``amp=True`` is bf16 (the former default), a dtype is that dtype, False is float32."""
    if isinstance(amp, torch.dtype):
        return amp
    return torch.bfloat16 if amp else None


def _set_size(loader: Any) -> int | None:
    shard = getattr(loader, "shard", None)
    if shard is not None:
        return int(shard.size)
    dataset = getattr(loader, "dataset", None)
    return len(dataset) if dataset is not None else None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    amp: bool | torch.dtype = True,
    channels_last: bool = False,
    occlude: tuple[int, float, int] | None = None,
    occlusion_chunk: int = 256,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over a loader.

    Args:
        amp: autocast dtype on CUDA (``True``: bf16; ``False``: float32).
        occlude: ``(patch, fraction, seed)`` to blank that fraction of patch cells.
        occlusion_chunk: images per draw of the occlusion masks (``eval.batch_size``); see
            :class:`~suite.train.occlusion.OcclusionMasks`.
    """
    from suite.device.hardware import host_to_device
    from suite.train.occlusion import OcclusionMasks, apply_occlusion

    was_training = model.training
    model.eval()
    dtype = _dtype(amp)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss, count
    shard = getattr(loader, "shard", None)
    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    masks: OcclusionMasks | None = None
    seen = 0  # images of this rank so far
    for x, y in loader:
        n = y.shape[0]
        if occlude is not None:
            patch, fraction, seed = occlude
            if masks is None:
                size = _set_size(loader)
                if size is None:
                    raise ValueError("occlusion needs a loader with a dataset (its size fixes the masks)")
                masks = OcclusionMasks(
                    size, x.shape[-2] // patch, x.shape[-1] // patch, fraction, seed, occlusion_chunk
                )
            if x.shape[-2] % patch or x.shape[-1] % patch:
                raise ValueError(f"image size {x.shape[-2]}x{x.shape[-1]} must be divisible by patch={patch}")
            drop = masks(rank + world * torch.arange(seen, seen + n))
            x = apply_occlusion(x.to(device, non_blocking=True), host_to_device(drop, device), patch)
        else:
            x = x.to(device, non_blocking=True)
        seen += n
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = model(x)
        logits = logits.float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5.eq(y[:, None])
        sums[:3] += torch.stack([
            hits[:, 0].sum(), hits.any(dim=1).sum(), F.cross_entropy(logits, y, reduction="sum")
        ]).double()
    model.train(was_training)
    sums[3] = seen  # counted on the host: no copy per batch
    if shard is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    correct1, correct5, loss_sum, count = sums.tolist()  # the one host sync of the evaluation
    if count == 0:
        raise ValueError("evaluation loader is empty")
    return {
        "top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count, "images": int(count),
    }


def evaluate_occlusion(
    model: nn.Module,
    loader: Iterable,
    *,
    fractions: list[float],
    patch: int,
    seed: int,
    device: torch.device,
    amp: bool | torch.dtype = True,
    channels_last: bool = False,
    occlusion_chunk: int = 256,
) -> dict[str, float]:
    """Top-1 with each fraction of patch cells blanked: ``{"occ25_top1": ..., ...}``."""
    results = {}
    for fraction in fractions:
        metrics = evaluate(
            model, loader, device=device, amp=amp, channels_last=channels_last, occlude=(patch, fraction, seed),
            occlusion_chunk=occlusion_chunk,
        )
        results[occlusion_key(fraction)] = metrics["top1"]
    return results


def evaluate_epoch(
    model: nn.Module, ema: nn.Module | None, loader: Iterable, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """An end-of-epoch evaluation of the model and its EMA on the same batches.

    Returns:
        ``(row, metrics, ema_metrics)``: the metrics row's entries (``top1``, ``top5``,
        ``val_loss``, ``val_images``, and ``ema_top1``/``ema_top5`` with an EMA), then the raw
        results of :func:`evaluate` for the model and the EMA (None without one).
    """
    metrics = evaluate(model, loader, **kwargs)
    row = {"top1": metrics["top1"], "top5": metrics["top5"], "val_loss": metrics["loss"], "val_images": metrics["images"]}
    ema_metrics = None if ema is None else evaluate(ema, loader, **kwargs)
    if ema_metrics is not None:
        row.update({"ema_top1": ema_metrics["top1"], "ema_top5": ema_metrics["top5"]})
    return row, metrics, ema_metrics
