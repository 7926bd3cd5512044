"""DeiT's recipe as the trainer builds it: the loss, AdamW (timm's factory) and the warmup +
cosine schedule stepped per optimiser step (cooldown epochs stay at ``min_lr``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "loss_fn", "optimizer_step"]


def loss_fn(kind: str) -> Any:
    if kind == "soft_ce":
        return lambda logits, target: torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    if kind == "bce":
        return lambda logits, target: F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"optim.loss must be one of soft_ce, bce, but got {kind!r}")


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if cfg.optim.name == "sgd":
        kwargs["momentum"] = cfg.optim.momentum
    lr = cfg.optim.effective_lr(cfg.data.batch_size)
    return create_optimizer_v2(model, cfg.optim.name, lr=lr, weight_decay=cfg.optim.weight_decay, **kwargs)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps: int) -> Any:
    from timm.scheduler import CosineLRScheduler

    total = cfg.schedule.epochs * steps  # the cosine; cooldown epochs after it stay at min_lr
    warmup = int(round(cfg.schedule.warmup_epochs * steps))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=cfg.schedule.min_lr,
        warmup_t=warmup,
        warmup_lr_init=cfg.schedule.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def optimizer_step(optimizer: torch.optim.Optimizer, model: nn.Module, *, clip_grad: float | None, scaler: Any) -> None:
    """Clip (when asked) and step; with fp16's ``scaler`` the gradients are unscaled before clipping."""
    if scaler is None:
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        return
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
