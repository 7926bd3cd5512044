"""Batch mixing with DeiT's switch: none, Mixup, CutMix and TokenMix behind one callable.

Per batch, as DeiT/timm do: with probability ``prob`` the batch is mixed; then with
probability ``switch_prob`` it takes the region branch (timm's CutMix, or TokenMix),
else the Mixup branch (Beta(``mixup_alpha``)). Mixup and CutMix reuse timm's ``Mixup``
unchanged; TokenMix replaces only the CutMix branch (as in the reference code). The
teacher, when TokenMix's target needs one, sees the unmixed augmented batch.

With ``groups`` (G images; the reference's 128 = one GPU batch of its 8 x 128 run) the batch is
cut into groups of G consecutive images and every group draws its own mixing decision, switch
branch, Mixup ``lam`` and TokenMix mask, and pairs its images inside the group (``flip(0)`` of the
group). For TokenMix this is vectorised: one draw of all decisions, one mask draw, one blend
kernel for the whole batch (``suite.mixing.tokenmix.blend_partners_``) and the teacher run only on the
images of TokenMix groups. For ``mixup`` / ``cutmix`` timm's ``Mixup`` is called once per group.
Without ``groups`` the whole batch is one group, as before.

All draws come from the step's seeded generators (see ``suite.train.trainer``), so a resumed
run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

from suite.config import MixConfig
from suite.mixing.masks import token_masks
from suite.mixing.targets import Fallback, mix_weights, mixed_target

__all__ = ["BatchMixer", "build_mixer"]


class BatchMixer:
    """Callable ``(x, y, generator) -> (x, soft_target, stats)`` for one mixing method."""

    def __init__(
        self,
        cfg: MixConfig,
        *,
        num_classes: int,
        teacher: Any | None = None,
        fallback: Fallback = "area",
        clamp_negative: bool = True,
    ) -> None:
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
            from suite.mixing.tokenmix import TokenMix

            self._tokenmix = TokenMix(
                num_classes=num_classes,
                mask_mode=cfg.mask_mode,
                mask_ratio=cfg.mask_ratio,
                token_grid=cfg.token_grid,
                min_aspect=cfg.min_aspect,
                per_sample=cfg.per_sample,
                target_mode=cfg.target,
                label_smoothing=cfg.label_smoothing,
                fallback=fallback,
                clamp_negative=clamp_negative,
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
        groups = getattr(self.cfg, "groups", None)
        if groups is not None and x.shape[0] % groups:
            raise ValueError(f"batch size {x.shape[0]} must be a multiple of mix.groups={groups}")
        if method in ("mixup", "cutmix"):
            if groups is None:
                x, target = self._timm(x, y)
            else:  # timm mixes each slice in place, partners inside the slice
                starts = range(0, len(x), groups)
                target = torch.cat([self._timm(x[s : s + groups], y[s : s + groups])[1] for s in starts])
            return x, target, {"branch": method}
        if groups is not None:
            return self._tokenmix_groups(x, y, groups, generator=generator, geometry=geometry)
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


    def _tokenmix_groups(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        size: int,
        *,
        generator: torch.Generator,
        geometry: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """DeiT's switch with TokenMix, drawn per group of ``size`` images, vectorised over the batch."""
        from suite.mixing.tokenmix import blend_partners_, group_partners

        tm, cfg = self._tokenmix, self.cfg
        b, device, g = x.shape[0], x.device, tm.token_grid
        n = b // size
        partner = group_partners(b, size, device)
        draws = torch.rand(n, 2, generator=generator)
        mixed = draws[:, 0] < cfg.prob
        token = mixed & (draws[:, 1] < cfg.switch_prob) if self._timm is not None else mixed
        mixup = mixed & ~token
        alpha = cfg.mixup_alpha
        rng = np.random.Generator(np.random.PCG64(int(torch.randint(2**63 - 1, (1,), generator=generator))))
        lam = torch.from_numpy(rng.beta(alpha, alpha, size=n)).float() if alpha > 0 else torch.ones(n)
        masks = token_masks(
            b if tm.per_sample else n, g, tm.mask_ratio, mode=tm.mask_mode, per_sample=True,
            min_aspect=tm.min_aspect, generator=generator, device=device,
        )
        if not tm.per_sample:
            masks = masks.repeat_interleave(size, 0)
        token_cpu = token.repeat_interleave(size)
        token_s = token_cpu.to(device, non_blocking=True)
        own = torch.where(mixup, lam, 1.0).repeat_interleave(size).to(device, non_blocking=True)
        smoothing = tm.label_smoothing
        target = mixed_target(y, own, 1.0 - own, self.num_classes, smoothing, mode="area", partner=partner)
        fallbacks = torch.zeros((), dtype=torch.long, device=device)
        if bool(token.any()):
            maps = None
            if tm.needs_maps:
                if bool(token.all()):
                    maps = self.teacher.maps(x, y, g, geometry=geometry)
                else:  # the teacher sees only the images of TokenMix groups (partners share a group)
                    sel_cpu = token_cpu.nonzero().squeeze(1)
                    sel = sel_cpu.to(device, non_blocking=True)
                    sub = self.teacher.maps(
                        x.index_select(0, sel), y.index_select(0, sel), g,
                        geometry=None if geometry is None else geometry.index_select(0, sel_cpu),
                    )
                    maps = sub.new_zeros(b, g, g).index_copy_(0, sel, sub)
            w_own, w_partner, fallback = mix_weights(
                masks, maps, tm.target_mode, partner=partner, fallback=tm.fallback, clamp_negative=tm.clamp_negative
            )
            tokens = mixed_target(
                y, w_own, w_partner, self.num_classes, smoothing, mode=tm.target_mode, partner=partner
            )
            target = torch.where(token_s.view(b, 1), tokens, target)
            fallbacks = (fallback & token_s).sum()
        coeff = torch.where(token_s.view(b, 1, 1), masks.float(), (1.0 - own).view(b, 1, 1).expand(b, g, g))
        blend_partners_(x, coeff, partner)
        stats = {
            "branch": "groups",
            "fallbacks": fallbacks,
            "partner_fraction": (masks.float().mean((1, 2)) * token_s).sum() / token_s.sum().clamp_min(1),
            "tokenmix_groups": token.sum(),
            "mixup_groups": mixup.sum(),
        }
        return x, target, stats


def build_mixer(
    cfg: MixConfig,
    *,
    num_classes: int,
    teacher: Any | None = None,
    fallback: Fallback = "area",
    clamp_negative: bool = True,
) -> BatchMixer:
    """Factory for the training loop; ``fallback`` and ``clamp_negative`` are the teacher's
    options (``teacher.fallback``, ``teacher.clamp_negative``; see ``suite.mixing.targets``)."""
    return BatchMixer(
        cfg, num_classes=num_classes, teacher=teacher, fallback=fallback, clamp_negative=clamp_negative
    )
