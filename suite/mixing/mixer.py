"""Batch mixing with DeiT's switch: none, Mixup, CutMix and TokenMix behind one callable.

Per batch, as DeiT/timm do: with probability ``prob`` the batch is mixed; then with
probability ``switch_prob`` it takes the region branch (timm's CutMix, or TokenMix),
else the Mixup branch (Beta(``mixup_alpha``)). Mixup and CutMix reuse timm's ``Mixup``
unchanged; TokenMix replaces only the CutMix branch (as in the reference code). The
teacher, when TokenMix's target needs one, sees the unmixed augmented batch.

With ``groups`` (G images; the reference's 128 = one GPU batch of its 8 x 128 run) the batch is
cut into groups of G consecutive images and every group draws its own mixing decision and switch
branch, pairing its images inside the group (``flip(0)`` of the group); without ``groups`` the whole
batch is one group. TokenMix has one code path for both: the images of every group that chose
TokenMix go through one ``TokenMix`` call (one mask per group, or per image with ``per_sample``; one
teacher pass over those images only; the pixels are mixed group by group, each group in place);
every group that chose Mixup goes through timm's ``Mixup`` (as ``mixup`` / ``cutmix`` do, once per
group, with its ``mode``). Draw order per step: the groups' switch draws, then the TokenMix
masks (step generator), then Mixup's ``lam`` (numpy, as timm draws it); with one group this is
exactly the stream the suite has always drawn (``tests/suite_tests/test_mixing_golden.py``).

All draws come from the step's seeded generators (see ``suite.train.trainer``), so a resumed
run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

from suite.config import MixConfig
from suite.mixing.targets import Fallback

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
                target=cfg.target,
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
        return self._tokenmix_switch(x, y, groups or x.shape[0], generator=generator, geometry=geometry)

    def _tokenmix_switch(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        size: int,
        *,
        generator: torch.Generator,
        geometry: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """DeiT's switch with TokenMix in place of CutMix, drawn per group of ``size`` images."""
        b, device = x.shape[0], x.device
        n = b // size
        draws = torch.rand(n, 2, generator=generator)  # one group: the same two numbers as rand(2)
        mixed = draws[:, 0] < self.cfg.prob
        token = mixed & (draws[:, 1] < self.cfg.switch_prob) if self._timm is not None else mixed
        mixup = mixed & ~token
        zero = torch.zeros((), device=device)
        stats: dict[str, Any] = {
            "branch": _branch_name(mixed, token, mixup),
            "fallbacks": zero.long(),
            "partner_fraction": zero,
            "tokenmix_groups": token.sum(),
            "mixup_groups": mixup.sum(),
        }

        def tokenmix(xs: torch.Tensor, ys: torch.Tensor, rows: torch.Tensor | None) -> tuple:
            """TokenMix over whole groups; the teacher sees exactly these (unmixed) images."""
            maps = None
            if self._tokenmix.needs_maps:
                maps = self.teacher.maps(xs, ys, self._tokenmix.token_grid, geometry=rows)
            return self._tokenmix(xs, ys, maps=maps, generator=generator, group_size=size)

        if bool(token.all()):
            x, target, token_stats = tokenmix(x, y, geometry)
            return x, target, stats | token_stats
        target = self._plain(y)
        if bool(token.any()):  # only the images of TokenMix groups, as one batch of whole groups
            sel_cpu = token.repeat_interleave(size).nonzero().squeeze(1)
            sel = sel_cpu.to(device, non_blocking=True)
            part = None if geometry is None else geometry.index_select(0, sel_cpu)
            xs, ts, token_stats = tokenmix(x.index_select(0, sel), y.index_select(0, sel), part)
            x.index_copy_(0, sel, xs)
            target.index_copy_(0, sel, ts)
            stats |= token_stats
        for k in mixup.nonzero().flatten().tolist():  # timm mixes each slice in place
            rows = slice(k * size, (k + 1) * size)
            target[rows] = self._timm(x[rows], y[rows])[1]
        return x, target, stats


def _branch_name(mixed: torch.Tensor, token: torch.Tensor, mixup: torch.Tensor) -> str:
    """``none``, ``tokenmix`` or ``mixup`` when every group took that branch, else ``groups``."""
    if not bool(mixed.any()):
        return "none"
    if bool(token.all()):
        return "tokenmix"
    return "mixup" if bool(mixup.all()) else "groups"


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
