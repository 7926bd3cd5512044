"""Where a training stands, and what a checkpoint must hold to resume it exactly: the epoch/step
counters and history (:class:`TrainState`), one epoch's running sums kept on the device
(:class:`DeviceMeter`), and the RNG states (restored on the CPU, whatever the device).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["DeviceMeter", "TrainState", "check_finite", "empty_meter", "rng_state", "set_rng_state"]


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint (``state_dict``) and restored from it.

    ``epoch`` counts finished epochs, ``step`` the steps done in the current one; ``meter``
    holds the current epoch's sums (host numbers, read at a checkpoint).
    """

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"top1": -1.0, "top5": 0.0, "epoch": -1})
    meter: dict[str, float] = field(default_factory=lambda: empty_meter())
    seconds: float = 0.0  # training wall time of earlier sessions of this run
    setup_seconds: float = 0.0  # before the first step, over this run's sessions (imports, data, model, resume)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def note_best(self, epoch: int, metrics: Mapping[str, Any], ema: Mapping[str, Any] | None) -> None:
        """Keep the best evaluated epoch (1-based ``epoch``) of the model and, apart, of its EMA."""
        if metrics["top1"] > self.best["top1"]:
            self.best.update({"top1": metrics["top1"], "top5": metrics["top5"], "epoch": epoch})
        if ema is not None and ema["top1"] > self.best.get("ema_top1", -1.0):
            self.best.update({"ema_top1": ema["top1"], "ema_epoch": epoch})

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> TrainState:
        return cls(
            epoch=ckpt["epoch"], step=ckpt["step"], history=list(ckpt["history"]), best=dict(ckpt["best"]),
            meter=dict(ckpt["meter"] or empty_meter()), seconds=float(ckpt.get("seconds", 0.0)),
            setup_seconds=float(ckpt.get("setup_seconds", 0.0)),
        )


def empty_meter() -> dict[str, float]:
    return {"loss_sum": 0.0, "images": 0, "steps": 0, "seconds": 0.0, "fallbacks": 0}


class DeviceMeter:
    """One epoch's running sums, kept on the device so the step never waits for the host."""

    def __init__(self, start: Mapping[str, float], device: torch.device) -> None:
        self.base = dict(start)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.fallbacks = torch.zeros((), dtype=torch.int64, device=device)
        self.images = 0
        self.steps = 0

    def add(self, loss: torch.Tensor, images: int, fallbacks: torch.Tensor | int) -> None:
        self.loss_sum += loss.detach().double() * images
        self.fallbacks += fallbacks
        self.images += images
        self.steps += 1

    def read(self, seconds: float) -> dict[str, float]:
        """The epoch's host numbers so far (one device sync)."""
        return {
            "loss_sum": self.base["loss_sum"] + float(self.loss_sum),
            "images": self.base["images"] + self.images,
            "steps": self.base["steps"] + self.steps,
            "seconds": self.base["seconds"] + seconds,
            "fallbacks": self.base["fallbacks"] + int(self.fallbacks),
        }


def check_finite(meter: Mapping[str, float], epoch: int, step: int) -> None:
    if not math.isfinite(meter["loss_sum"]):
        raise FloatingPointError(
            f"non-finite training loss in epoch {epoch + 1} before step {step}; no checkpoint of these weights "
            "was written (lower optim.lr, set optim.clip_grad, or check the data)"
        )


def rng_state() -> dict[str, Any]:
    """RNG states in types that ``torch.load(weights_only=True)`` accepts (no numpy arrays)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states, wherever the checkpoint's tensors were loaded.

    The RNG states are CPU byte tensors whatever the device (``torch.set_rng_state`` and numpy need
    them there). CUDA states are restored for the GPUs this process sees, at most as many as were
    saved: a job that resumes with fewer (or more) visible GPUs than it saved is fine, since every
    draw of a step is re-seeded from ``(seed, epoch, step)`` anyway.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(_cuda_states(state, torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda_state, device=index)


def _cuda_states(state: Mapping[str, Any], visible: int) -> list[torch.Tensor]:
    """The saved CUDA RNG states to restore on ``visible`` GPUs, as CPU tensors (at most ``visible``).

    >>> s = {"cuda": [torch.zeros(2, dtype=torch.uint8), torch.ones(2, dtype=torch.uint8)]}
    >>> len(_cuda_states(s, 1)), len(_cuda_states(s, 4)), len(_cuda_states({}, 2))
    (1, 2, 0)
    """
    return [t.cpu() for t in list(state.get("cuda") or [])[:visible]]
