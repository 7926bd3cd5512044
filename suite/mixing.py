"""Batch mixing with DeiT's switch: none, Mixup, CutMix and TokenMix behind one callable.

Per batch, as DeiT/timm do: with probability ``prob`` the batch is mixed; then with
probability ``switch_prob`` it takes the region branch (timm's CutMix, or TokenMix),
else the Mixup branch (Beta(``mixup_alpha``)). Mixup and CutMix reuse timm's ``Mixup``
unchanged; TokenMix replaces only the CutMix branch (as in the reference code). The
teacher, when TokenMix's target needs one, sees the unmixed augmented batch.

All draws come from the step's seeded generators (see ``suite.trainer``), so a resumed
run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

from suite.config import MixConfig

__all__ = ["BatchMixer", "build_mixer"]


class BatchMixer:
    """Callable ``(x, y, generator) -> (x, soft_target, stats)`` for one mixing method."""

    def __init__(self, cfg: MixConfig, *, num_classes: int, teacher: Any | None = None) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.teacher = teacher
        self._timm: Mixup | None = None
        self._tokenmix = None
        if cfg.method == "mixup":
            self._timm = self._timm_mixup(cfg.prob)
        elif cfg.method == "cutmix":
            self._timm = Mixup(
                mixup_alpha=cfg.mixup_alpha,
                cutmix_alpha=cfg.cutmix_alpha,
                prob=cfg.prob,
                switch_prob=cfg.switch_prob if cfg.mixup_alpha > 0 else 1.0,
                mode=cfg.mode,
                label_smoothing=cfg.label_smoothing,
                num_classes=num_classes,
            )
        elif cfg.method == "tokenmix":
            from suite.tokenmix import TokenMix

            self._tokenmix = TokenMix(
                num_classes=num_classes,
                mask_mode=cfg.mask_mode,
                mask_ratio=cfg.mask_ratio,
                token_grid=cfg.token_grid,
                min_aspect=cfg.min_aspect,
                per_sample=cfg.per_sample,
                target_mode=cfg.target,
                label_smoothing=cfg.label_smoothing,
            )
            if cfg.mixup_alpha > 0:
                self._timm = self._timm_mixup(1.0)
            if cfg.target != "area" and teacher is None:
                raise ValueError(f"mix.target={cfg.target} needs a teacher, but none was given")
        elif cfg.method != "none":
            raise ValueError(f"mix.method must be one of none, mixup, cutmix, tokenmix, but got {cfg.method!r}")

    def _timm_mixup(self, prob: float) -> Mixup:
        """timm Mixup restricted to its Mixup branch (the region branch is CutMix/TokenMix)."""
        return Mixup(
            mixup_alpha=self.cfg.mixup_alpha,
            cutmix_alpha=0.0,
            prob=prob,
            mode=self.cfg.mode,
            label_smoothing=self.cfg.label_smoothing,
            num_classes=self.num_classes,
        )

    def _plain(self, y: torch.Tensor) -> torch.Tensor:
        return mixup_target(y, self.num_classes, lam=1.0, smoothing=self.cfg.label_smoothing)

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        geometry: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        method = self.cfg.method
        if method == "none":
            return x, self._plain(y), {"branch": "none"}
        if method in ("mixup", "cutmix"):
            x, target = self._timm(x, y)
            return x, target, {"branch": method}
        # tokenmix: DeiT switch with TokenMix in place of CutMix; draws from the CPU generator
        draws = torch.rand(2, generator=generator).tolist()
        if draws[0] >= self.cfg.prob:
            return x, self._plain(y), {"branch": "none"}
        if self._timm is not None and draws[1] >= self.cfg.switch_prob:
            x, target = self._timm(x, y)
            return x, target, {"branch": "mixup"}
        maps = None
        if self.cfg.target != "area":
            maps = self.teacher.maps(x, y, self.cfg.token_grid, geometry=geometry)
        x, target, stats = self._tokenmix(x, y, maps=maps, generator=generator)
        return x, target, {"branch": "tokenmix", **stats}


def build_mixer(cfg: MixConfig, *, num_classes: int, teacher: Any | None = None) -> BatchMixer:
    """Factory for the training loop."""
    return BatchMixer(cfg, num_classes=num_classes, teacher=teacher)
