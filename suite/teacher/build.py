"""Building TokenMix's teacher: the online CAM teacher or the offline maps, behind one interface.

Both kinds answer ``maps(x, y, grid, geometry=...) -> (B, G, G)`` activation maps of the
ground-truth classes (:class:`TeacherMaps`); the mixer needs nothing else. The online teacher
(:class:`suite.teacher.cam.Teacher`) runs a frozen model on the augmented batch; the offline one
(:class:`suite.teacher.offline.OfflineMaps`) cuts maps computed once by ``suite maps build`` to each
sample's crop. Weights come from checkpoint files only (no hub access).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from suite.config import TrainConfig
from suite.teacher.online import load_teacher

__all__ = ["TeacherMaps", "build_teacher", "load_teacher"]


class TeacherMaps(Protocol):
    """What the mixer asks of a teacher."""

    def maps(
        self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def build_teacher(
    cfg: TrainConfig,
    *,
    train_set: Any,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = torch.bfloat16,
) -> TeacherMaps | None:
    """The configured teacher: offline maps, the online CAM teacher (autocast to ``amp_dtype`` on
    CUDA), or None (area targets)."""
    if cfg.teacher.maps is not None:
        from suite.teacher.offline import OfflineMaps, training_set_fingerprint

        maps = OfflineMaps.open(
            cfg.teacher.maps,
            fingerprint=training_set_fingerprint(cfg.data, train_set),
            num_classes=num_classes,
            topk=cfg.teacher.topk,
            clamp_negative=cfg.teacher.clamp_negative,
        )
        maps.deliver_to(train_set)  # loader workers read each sample's stored map with its image
        return maps
    if cfg.teacher.enabled:
        return load_teacher(cfg, num_classes=num_classes, device=device, amp_dtype=amp_dtype)
    return None
