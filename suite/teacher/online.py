"""The online CAM teacher, built from a checkpoint file or a suite run folder (no hub access)."""

from __future__ import annotations

from typing import Any

import torch

from suite.config import TrainConfig
from suite.models.factory import build_model
from suite.models.weights import read_weights, resolve_checkpoint_path

__all__ = ["load_teacher"]


def load_teacher(
    cfg: TrainConfig, *, num_classes: int, device: torch.device, amp_dtype: torch.dtype | None = torch.bfloat16
) -> Any:
    """The online CAM teacher built from ``teacher.checkpoint`` (a file or a suite run folder).

    A suite checkpoint carries the teacher's architecture; other files need ``teacher.model``.
    ``teacher.topk`` gates its maps to the top-k classes per location (``None`` = dense). The
    teacher's forward runs under autocast to ``amp_dtype`` on CUDA: the student's dtype.

    Raises:
        ValueError: naming ``teacher.model``/``teacher.checkpoint`` when the file does not fit.
    """
    from suite.teacher.cam import Teacher

    if cfg.teacher.checkpoint is None:
        raise ValueError("teacher.checkpoint: no teacher configured (teacher=runs/<run_id> or a weights file)")
    path = resolve_checkpoint_path(cfg.teacher.checkpoint)
    state, saved_config = read_weights(path)
    name = cfg.teacher.model
    overrides: dict[str, Any] = dict(cfg.teacher.kwargs)
    img_size = cfg.data.img_size
    if saved_config is not None:
        saved_model = saved_config.get("model", {})
        name = name or saved_model.get("name")
        for key in ("patch_size", "embed_dim", "depth", "num_heads"):
            if saved_model.get(key) is not None:
                overrides.setdefault(key, saved_model[key])
        overrides.update({k: v for k, v in saved_model.get("kwargs", {}).items() if k not in overrides})
        img_size = saved_config.get("data", {}).get("img_size", img_size)
    if name is None:
        raise ValueError(f"teacher.model: {path} is not a suite checkpoint, so the teacher's timm name is needed")
    model = build_model(name, num_classes=num_classes, img_size=img_size, overrides=overrides)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"teacher.checkpoint: {path} does not fit {name} with {num_classes} classes "
            f"(missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]})"
        )
    return Teacher.from_module(
        model.to(device), topk=cfg.teacher.topk, amp_dtype=amp_dtype, clamp_negative=cfg.teacher.clamp_negative
    )
