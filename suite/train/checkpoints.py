"""What a training checkpoint holds, and reading one back.

``checkpoint.pt`` is written at step or epoch boundaries (:func:`training_payload`: weights,
optimiser, EMA, loss scale, process count, the loop's counters and history, RNG states, the
resolved config); the one before it stays as ``checkpoint.prev.pt``, the fallback for a damaged
file. When a run ends without ``run.keep_checkpoints`` the file becomes the run's final weights
(:func:`final_payload`: student and EMA, the counters and history, no optimiser state), from which
a lost summary is written again and which teachers and weight readers load like any checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from suite.config import ConfigError, MixConfig
from suite.run.records import RunPaths

__all__ = [
    "MIXING_STREAM", "check_mixing_stream", "check_processes", "check_resume", "final_payload", "read_checkpoint",
    "training_payload",
]

MIXING_STREAM = 2
"""The order in which a training step draws its mixing randomness, saved in every checkpoint.

2: TokenMix with ``mix.groups`` draws the groups' switch, then the masks of the TokenMix groups
only, then Mixup's lam from numpy as timm does (one TokenMix code path, whose one-group case is the
ungrouped stream unchanged). 1 (checkpoints without the key): grouped TokenMix drew a lam seed
from the step's generator and a mask for every group."""

_TRAINING_KEYS = {"model", "optimizer", "epoch", "step", "rng"}
_FINAL_KEYS = {"model", "epoch", "history", "best"}


def training_payload(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
    scaler: dict[str, Any] | None,
    processes: int,
    counters: Mapping[str, Any],
    rng: dict[str, Any],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """A resumable checkpoint (``counters``: ``TrainState.state_dict()`` with the elapsed seconds)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "model_ema": None if ema is None else ema.state_dict(),
        "scaler": scaler,  # fp16's loss scale; None for bf16 and fp32
        "processes": processes,
        **counters,
        "rng": rng,
        "mixing_stream": MIXING_STREAM,
        "config": dict(config),
    }


def final_payload(
    *,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    status: str,
    reason: str | None,
    processes: int,
    counters: Mapping[str, Any],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """An ended run's final weights: student and EMA, how it ended, and its history (the summary again)."""
    return {
        "model": model.state_dict(),
        "model_ema": None if ema is None else ema.state_dict(),
        "final": True,  # weights only; teachers and weight readers take it as any checkpoint
        "status": status,
        "reason": reason,
        **counters,
        "processes": processes,
        "config": dict(config),
    }


def read_checkpoint(paths: RunPaths, info: Callable[..., None]) -> dict[str, Any]:
    """``checkpoint.pt``, or the one before it (``checkpoint.prev.pt``) when it is unreadable.

    ``info`` (a logger's ``info``) is told when the previous checkpoint is used.

    Raises:
        RuntimeError: neither can be read; the message names the files and the fix.
    """
    errors = []
    for path in (paths.checkpoint, paths.previous_checkpoint):
        if not path.is_file():
            continue
        ckpt = _load(path, errors)
        if ckpt is None:
            continue
        if ckpt.get("final") and _FINAL_KEYS <= set(ckpt):
            return ckpt  # a finished run's final weights (run.keep_checkpoints=false): its summary was lost
        if not _TRAINING_KEYS <= set(ckpt):
            errors.append(f"{path}: ValueError: not a suite training checkpoint")
            continue
        if errors:
            info("unreadable %s; resuming from the previous checkpoint %s", errors[0], path.name)
        return ckpt
    raise RuntimeError(
        f"corrupt checkpoint: {'; '.join(errors)}. Delete {paths.checkpoint}"
        f"{' and ' + paths.previous_checkpoint.name if paths.previous_checkpoint.exists() else ''} "
        "to retrain the run from the start"
    )


def _load(path: Path, errors: list[str]) -> dict[str, Any] | None:
    try:
        # On the CPU: the RNG states must stay there; load_state_dict moves the weights and the
        # optimiser state to their parameters' device.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
        errors.append(f"{path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        return None
    if not isinstance(ckpt, dict):
        errors.append(f"{path}: ValueError: not a suite training checkpoint")
        return None
    return ckpt


def check_processes(
    ckpt: Mapping[str, Any], *, now: int, mixing: bool, run_id: str, root: Path, info: Callable[..., None]
) -> None:
    """Refuse to resume a mixing run with another process count than it was checkpointed with.

    Images pair for mixing within a process's share of the batch and each process draws its own
    masks, so another count silently changes the pairs and the draws: the run would no longer be
    the run its id names. Without mixing only the per-process seeds of dropout change; that is
    said in the log (``info``) and the run goes on.
    """
    saved = ckpt.get("processes")
    if saved is None or int(saved) == now:
        return
    if mixing:
        raise ConfigError(
            f"run {run_id} was checkpointed with {saved} processes and resumes with {now}: mixing pairs "
            f"images within each process's batch, so another count changes the pairs. Resume it with {saved} "
            f"processes (resources.nodes x resources.gpus_per_node, or suite train --nproc {saved}), or delete "
            f"{root} to retrain it"
        )
    info("resuming with %d processes where the checkpoint had %d (no mixing: only dropout draws change)", now, int(saved))


def check_mixing_stream(ckpt: Mapping[str, Any], *, grouped_tokenmix: bool, run_id: str, info: Callable[..., None]) -> None:
    """Say in the log when a grouped TokenMix run resumes from a checkpoint of another mixing stream.

    The run goes on (nothing trained is lost, and every step is still a TokenMix step of its
    config), but its steps after the resume draw masks and lam as the current version does, so it
    is not bit for bit the run one version would have trained. Ungrouped runs never changed stream.
    """
    saved = int(ckpt.get("mixing_stream", 1))
    if grouped_tokenmix and saved != MIXING_STREAM:
        info(
            "run %s was checkpointed with mixing stream %d and resumes with %d: its TokenMix groups draw "
            "their masks and Mixup lam in the current order from here on; delete the run folder to "
            "train it from the start with one stream",
            run_id, saved, MIXING_STREAM,
        )


def check_resume(
    ckpt: Mapping[str, Any], mix: MixConfig, *, processes: int, run_id: str, root: Path, info: Callable[..., None]
) -> None:
    """The checks before a run resumes from ``ckpt``: the process count, then the mixing stream."""
    check_processes(ckpt, now=processes, mixing=mix.method != "none", run_id=run_id, root=root, info=info)
    grouped = mix.method == "tokenmix" and mix.groups is not None
    check_mixing_stream(ckpt, grouped_tokenmix=grouped, run_id=run_id, info=info)
