"""TokenMix: mix images at token level and label them by the activation each keeps.

Liu, Liu, Zhou, Li, Liu, "TokenMix: Rethinking Image Mixing for Data Augmentation in Vision
Transformers", ECCV 2022, https://arxiv.org/abs/2207.08409; reference code
https://github.com/Sense-X/TokenMix (built on DeiT and timm 0.5.4). TokenMix replaces the CutMix
branch of timm's ``Mixup``: image ``i`` is mixed with its partner ``B - 1 - i`` (``x.flip(0)``,
timm's convention; the batch size must be even) through a token mask ``M`` on a G x G grid::

    x_mix = x * (1 - M) + x.flip(0) * M        # M upsampled to pixel blocks

and labelled by ``suite.mixing.targets`` (area, or the teacher's class activation kept visible).

The pixel mixing never builds a full-size pixel mask: the batch is viewed as ``(B, C, G, h, W)``
(token rows of ``h`` pixel rows) and the token mask, widened to ``(B, 1, G, 1, W)`` (1 / (C * h)
of a pixel mask), broadcasts over the channels and the pixel rows of each token row.
It is written *in place* into the input batch (as timm's ``Mixup`` does), pair by pair: a pair
``(i, B - 1 - i)`` only needs a copy of one of its two images before both are overwritten, and on
CPU the pairs are processed in chunks small enough to stay in the core's cache, so the batch
crosses memory about once (cheaper than timm's CutMix, which copies the whole flipped batch). On an
accelerator all pairs form one chunk (two half-batch copies and two fused ``where`` kernels).

Groups: the reference draws one mask (and one switch branch) per GPU batch of 128 images, pairing
images inside it. ``TokenMix`` takes a ``group_size``: the batch is cut into groups of that many
consecutive images, each with its own mask and partners inside it (``group_partners``); without it
the whole batch is one group. This is the only TokenMix code path: ``suite.mixing.mixer`` sends it
the images of the groups whose switch draw chose TokenMix (``mix.groups``; all of them, or the
whole batch as one group, without groups), and the one-group case draws exactly what it always
drew (``tests/suite_tests/test_mixing_golden.py``).

Deliberate differences from the reference code: any token grid, mask ratio (fixed or a range),
mask generator, per-sample masks, group size and target (label rule) can be chosen (the reference: 14 x 14,
112 tokens, one block mask per 128-image GPU batch, raw teacher weights); block masks have an
exact token count; maps come from an online teacher on the same augmented batch (``suite.teacher.cam``) or
from offline maps (``suite.teacher.offline``; the reference's x/y swap of the crop box is not
reproduced); a teacher map without positive mass falls back to area weights and is counted.

Example:
    >>> import torch
    >>> from suite.mixing.tokenmix import TokenMix
    >>> mix = TokenMix(num_classes=10, token_grid=4, target="area", per_sample=True)
    >>> x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    >>> x_mix, target, stats = mix(x, y, generator=torch.Generator().manual_seed(0))
    >>> target.shape, round(float(target.sum(1)[0]), 5)
    (torch.Size([4, 10]), 1.0)
"""

from __future__ import annotations

from typing import Literal

import torch

from suite.mixing.masks import _MAX_BLOCK_GRID, MASK_MODES, _check_ratio, token_masks
from suite.mixing.targets import FALLBACKS, TARGETS, Fallback, mix_weights, mixed_target

__all__ = ["TokenMix", "group_partners", "mix_tokens_"]

_CHUNK_BYTES = 1 << 20  # CPU: pairs per chunk so that both halves fit in about 1 MiB of cache


def _pairs_per_chunk(x: torch.Tensor) -> int:
    half = x.shape[0] // 2
    if x.device.type != "cpu":
        return max(1, half)
    pair_bytes = 2 * x[0].numel() * x.element_size()
    return max(1, min(half, _CHUNK_BYTES // max(1, pair_bytes)))


@torch.no_grad()
def mix_tokens_(x: torch.Tensor, mask: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """Mix every image with its partner through a token mask, in place.

    The partner of ``i`` is ``B - 1 - i``, or with ``group_size`` its mirror inside its group of
    ``group_size`` consecutive images (``group_partners``). After the call ``x[i]`` shows the old
    partner on the pixel blocks of the tokens where ``mask[i]`` is ``True`` and ``x_old[i]``
    elsewhere; every pixel is an exact copy of one of the two.

    Args:
        x: Batch ``(B, C, H, W)`` with even B, H and W divisible by G; overwritten.
        mask: Boolean token mask ``(B, G, G)``, ``(1, G, G)`` shared by the batch, or with
            ``group_size`` one ``(B / group_size, G, G)`` per group.
        group_size: Even size of the groups that pair inside themselves (default: the batch).

    Returns:
        ``x`` itself.

    Raises:
        ValueError: For an odd batch, mismatched shapes, or a grid that does not divide the image.
    """
    if group_size is not None and group_size != x.shape[0]:
        b = x.shape[0]
        group_partners(b, group_size)  # validates the group size
        if mask.dim() != 3 or mask.shape[0] not in (1, b // group_size, b):
            raise ValueError(
                f"mask must have shape ({b}, G, G), ({b // group_size}, G, G) or (1, G, G), "
                f"but got mask.shape={tuple(mask.shape)}"
            )
        per_group = mask.shape[0] == b // group_size and mask.shape[0] != b
        for k, start in enumerate(range(0, b, group_size)):  # one call per group, not per sample
            part = mask if mask.shape[0] == 1 else mask[k : k + 1] if per_group else mask[start : start + group_size]
            mix_tokens_(x[start : start + group_size], part)
        return x
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), but got x.shape={tuple(x.shape)}")
    b, _, height, width = x.shape
    if b % 2 != 0:
        raise ValueError(f"batch size must be even (partner of i is B - 1 - i), but got batch size {b}")
    if mask.dim() != 3 or mask.shape[1] != mask.shape[2] or mask.shape[0] not in (1, b):
        raise ValueError(
            f"mask must have shape ({b}, G, G) or (1, G, G), but got mask.shape={tuple(mask.shape)}"
        )
    g = mask.shape[-1]
    if height % g != 0 or width % g != 0:
        raise ValueError(f"image size {height}x{width} must be divisible by the token grid {g}")
    # View the batch as (B, C, G, h, W) and widen the mask along W only, to (B, 1, G, 1, W): it
    # broadcasts over the channels and the h pixel rows of each token row, is 1 / (C * h) of a
    # pixel mask, and lets the innermost loop run over whole contiguous image rows (a fully
    # token-shaped (B, 1, G, 1, G, 1) mask over a (B, C, G, h, G, w) view is ~20 % slower at
    # 224 px and 2-3x slower for 32 px images, whose token rows are only 4 pixels wide).
    x5 = x.unflatten(2, (g, height // g))
    m5 = (
        mask.to(device=x.device, dtype=torch.bool)
        .repeat_interleave(width // g, dim=2)
        .view(-1, 1, g, 1, width)
    )
    shared = m5.shape[0] == 1
    half, step = b // 2, _pairs_per_chunk(x)
    # one buffer per half-chunk, reused by every chunk (no per-chunk allocation)
    lo_buf = torch.empty((step, *x5.shape[1:]), dtype=x.dtype, device=x.device)
    hi_buf = torch.empty_like(lo_buf) if step > 1 else None
    reverse = torch.arange(step - 1, -1, -1, device=x.device)
    for start in range(0, half, step):
        stop = min(start + step, half)
        k = stop - start
        lo, hi = x5[start:stop], x5[b - stop : b - start]  # hi[j] is the partner of lo[k - 1 - j]
        m_lo = m5 if shared else m5[start:stop]
        m_hi = m5 if shared else m5[b - stop : b - start]
        if k == 1:  # a single pair: keep a copy of one image, write both
            lo_old = lo_buf[:1].copy_(lo)
            torch.where(m_lo, hi, lo, out=lo)
        else:  # copies in partner order, then both halves are written
            lo_old = torch.index_select(lo, 0, reverse[step - k :], out=lo_buf[:k])
            hi_old = torch.index_select(hi, 0, reverse[step - k :], out=hi_buf[:k])
            torch.where(m_lo, hi_old, lo, out=lo)
        torch.where(m_hi, lo_old, hi, out=hi)
    return x


def group_partners(batch: int, group_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Partner index of every sample when a batch is mixed in groups of ``group_size`` images.

    Inside each group the partner is timm's mirror (``flip(0)`` of the group), as on one GPU of the
    reference's data-parallel run; ``group_size == batch`` gives ``B - 1 - i``.

    Example:
        >>> group_partners(8, 4).tolist()
        [3, 2, 1, 0, 7, 6, 5, 4]
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be an even integer >= 2, but got group_size={group_size!r}")
    if batch % group_size:
        raise ValueError(f"batch size must be a multiple of group_size={group_size}, but got {batch}")
    return torch.arange(batch, device=device).view(-1, group_size).flip(1).reshape(-1)


class TokenMix:
    """TokenMix as a callable ``(x, y) -> (x_mixed, soft_target, stats)``.

    Args:
        num_classes: Number of classes C of the soft targets.
        mask_mode: Token mask generator, ``block`` (the method's), ``random`` or ``box``
            (see ``suite.mixing.masks.token_masks``).
        mask_ratio: Fraction of tokens taken from the partner, in ``(0, 1)``, or a range
            ``(lo, hi)`` sampled uniformly per mask. The default ``4 / 7`` is the reference's 112
            of 196 tokens.
        token_grid: Token grid size G; image height and width must be multiples of it (14 for
            224 px and patch 16; coarser or finer grids are an ablation).
        min_aspect: Minimum rectangle aspect ratio of ``block`` and ``box`` masks, in ``(0, 1]``.
        per_sample: One mask per sample instead of one per batch (the reference: one per batch).
        target: ``teacher_raw`` (the reference's), ``teacher_norm``, ``mixed`` or ``area``
            (see ``suite.mixing.targets``). The teacher targets need ``maps`` in every call.
        label_smoothing: Label smoothing in ``[0, 1)``.

    Raises:
        ValueError: For any invalid argument.

    Example:
        >>> mix = TokenMix(num_classes=5, token_grid=2, target="area")
        >>> x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).view(2, 1, 2, 2)
        >>> _, target, stats = mix(x, torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
        >>> target.shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        *,
        num_classes: int,
        mask_mode: Literal["block", "random", "box"] = "block",
        mask_ratio: float | tuple[float, float] = 4 / 7,
        token_grid: int = 14,
        min_aspect: float = 0.3,
        per_sample: bool = False,
        target: Literal["area", "teacher_raw", "teacher_norm", "mixed"] = "teacher_raw",
        label_smoothing: float = 0.1,
        fallback: Fallback = "area",
        clamp_negative: bool = True,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, but got num_classes={num_classes!r}")
        if mask_mode not in MASK_MODES:
            raise ValueError(
                f"mask_mode must be one of {', '.join(MASK_MODES)}, but got mask_mode={mask_mode!r}"
            )
        lo, hi = _check_ratio(mask_ratio, "mask_ratio")
        if isinstance(token_grid, bool) or not isinstance(token_grid, int) or token_grid < 2:
            raise ValueError(f"token_grid must be an integer >= 2, but got token_grid={token_grid!r}")
        if mask_mode == "block" and token_grid > _MAX_BLOCK_GRID:
            raise ValueError(
                f"token_grid must be <= {_MAX_BLOCK_GRID} for mask_mode='block', "
                f"but got token_grid={token_grid}"
            )
        if (
            isinstance(min_aspect, bool)
            or not isinstance(min_aspect, (int, float))
            or not 0 < min_aspect <= 1
        ):
            raise ValueError(f"min_aspect must be in (0, 1], but got min_aspect={min_aspect!r}")
        if not isinstance(per_sample, bool):
            raise ValueError(f"per_sample must be a bool, but got per_sample={per_sample!r}")
        if target not in TARGETS:
            raise ValueError(
                f"target must be one of {', '.join(TARGETS)}, but got target={target!r}"
            )
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
            raise ValueError(
                f"label_smoothing must be in [0, 1), but got label_smoothing={label_smoothing!r}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), but got label_smoothing={label_smoothing}")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, but got fallback={fallback!r}")
        self.num_classes = num_classes
        self.mask_mode = mask_mode
        self.mask_ratio: float | tuple[float, float] = (
            (lo, hi) if isinstance(mask_ratio, (tuple, list)) else lo
        )
        self.token_grid = token_grid
        self.min_aspect = float(min_aspect)
        self.per_sample = per_sample
        self.target = target
        self.label_smoothing = float(label_smoothing)
        self.fallback: Fallback = fallback
        self.clamp_negative = bool(clamp_negative)

    @property
    def needs_maps(self) -> bool:
        """Whether ``__call__`` needs teacher activation maps."""
        return self.target != "area"

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k in (
                "num_classes",
                "mask_mode",
                "mask_ratio",
                "token_grid",
                "min_aspect",
                "per_sample",
                "target",
                "label_smoothing",
            )
        )
        return f"TokenMix({fields})"

    @torch.no_grad()
    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        maps: torch.Tensor | None = None,
        generator: torch.Generator,
        group_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Mix a batch in place and return it with its soft targets.

        Args:
            x: Augmented batch ``(B, C, H, W)``, B even, H and W multiples of ``token_grid``.
                Overwritten with the mixed images (the batch belongs to the training step; timm's
                ``Mixup`` does the same).
            y: Class indices ``(B,)``.
            maps: Teacher activation maps ``(B, G, G)`` of the *unmixed* batch (``suite.teacher.cam``);
                required by the teacher targets, ignored by ``area``.
            generator: Source of all randomness, a CPU generator: the masks are made on the host
                and copied to the device of ``x`` (see ``suite.mixing.masks``).
            group_size: Mix in groups of this many consecutive images (even, dividing B): each
                group draws its own mask (unless ``per_sample``) and pairs its images inside
                itself (``group_partners``). Default: the whole batch is one group.

        Returns:
            ``(x, target, stats)``: the mixed batch (the same tensor as ``x``), float32 targets
            ``(B, num_classes)``, and 0-dim tensors ``stats["fallbacks"]`` (samples whose teacher
            map gave no signal, labelled by area) and ``stats["partner_fraction"]`` (mean fraction
            of partner tokens). The stats stay tensors so that no device sync is forced; call
            ``int()`` / ``float()`` when logging.

        Raises:
            ValueError: For an odd batch, sizes not divisible by the grid, or missing maps.
        """
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), but got x.shape={tuple(x.shape)}")
        b, _, height, width = x.shape
        g = self.token_grid
        if b % 2 != 0:
            raise ValueError(f"batch size must be even (partner of i is B - 1 - i), but got batch size {b}")
        if height % g != 0 or width % g != 0:
            raise ValueError(f"image size {height}x{width} must be divisible by token_grid={g}")
        if y.dim() != 1 or y.shape[0] != b:
            raise ValueError(f"y must have shape ({b},), but got y.shape={tuple(y.shape)}")
        if self.needs_maps:
            if maps is None:
                raise ValueError(f"maps must be given for target={self.target!r}, but got maps=None")
            if tuple(maps.shape) != (b, g, g):
                raise ValueError(
                    f"maps must have shape ({b}, {g}, {g}), but got maps.shape={tuple(maps.shape)}"
                )
        size = b if group_size is None else group_size
        partner = None if size == b else group_partners(b, size, x.device)  # None: B - 1 - i
        # one mask per sample, or one per group (a single draw for the whole batch as one group)
        mask = token_masks(
            b if self.per_sample else b // size,
            g,
            self.mask_ratio,
            mode=self.mask_mode,
            per_sample=True,
            min_aspect=self.min_aspect,
            generator=generator,
            device=x.device,
        )
        cells = mask if self.per_sample else mask.repeat_interleave(size, 0)
        w_own, w_partner, fallback = mix_weights(
            cells,
            maps if self.needs_maps else None,
            self.target,
            partner=partner,
            fallback=self.fallback,
            clamp_negative=self.clamp_negative,
        )
        target = mixed_target(
            y, w_own, w_partner, self.num_classes, self.label_smoothing, target=self.target, partner=partner
        )
        mix_tokens_(x, mask, group_size=size)
        stats = {"fallbacks": fallback.sum(), "partner_fraction": mask.float().mean()}
        return x, target, stats
