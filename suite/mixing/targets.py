"""Soft targets for token-mixed images: pure label helpers, like timm's ``mixup_target``.

TokenMix (Liu et al., ECCV 2022, https://arxiv.org/abs/2207.08409; reference code
https://github.com/Sense-X/TokenMix) labels a mixed image by how much of each image's *class
activation* stays visible, not by area. With ``A`` an image's activation map for its ground-truth
class on the token grid (non-negative, summing to 1) and ``M`` the token mask (1 = partner token),
image ``i`` mixed with partner ``B - 1 - i`` (``flip(0)``, timm's convention) gets::

    w_own     = sum(A_i * (1 - M_i))        # own activation still visible
    w_partner = sum(A_{B-1-i} * M_i)        # partner activation pasted in
    target    = w_own * y_own + w_partner * y_partner

Targets, the label rules (the ablation axis; ``mix.target`` in the config, ``target`` in the code):

* ``area``: CutMix-style weights ``1 - |M| / N`` and ``|M| / N``; isolates the effect of the mask.
* ``teacher_raw``: the weights above, unnormalised (their total lies in ``[0, 2]``), smoothed the
  way the reference does (see ``mixed_target``); this is the faithful setting, meant for a
  BCE-with-logits loss as in the reference.
* ``teacher_norm``: the teacher weights divided by their sum.
* ``mixed``: the mean of the ``area`` and ``teacher_norm`` weights (TransMix-like).

How a map becomes ``A`` and what a sample without teacher signal gets are two options
(``teacher.clamp_negative`` and ``teacher.fallback`` in the config; the teachers of
``suite.teacher`` normalise their maps by the same rule before):

* ``clamp_negative=True`` (the suite's default): negative map values count as 0, then each map is
  divided by its sum. ``False`` (the reference): the map keeps its negative values (a CAM is a
  logit map; a location voting against the class lowers the weight of the part that shows it)
  and is divided by its signed sum, so a weight may be negative or above 1.
* A map has *no positive mass* when that sum is not positive (all zero, e.g. the class is nowhere
  among the teacher's top-k; or, without clamping, a negative total); such a map counts as all 0.
* ``fallback="area"`` (the suite's default): a sample whose map or whose partner's map has no
  positive mass, or whose two teacher weights sum to zero or less, takes the ``area`` weights.
  ``fallback="zero"`` (the reference): the weights stay the teacher's, so an image without mass
  gets weight 0 for its own label while its partner's label keeps the partner map's weight (in
  ``teacher_norm`` / ``mixed`` a pair whose weights sum to zero or less gets teacher weights 0).

Either way such samples are flagged (``fallback`` in the result), and training counts them
(``tokenmix_fallbacks`` in the metrics).

What the reference does (``Mixup.__call__`` of Sense-X/TokenMix's ``tokenmix.py``): the raw
visible sums of the ground-truth channel, divided by ``sum + 1e-8``, without clamping and without
fallback. ``clamp_negative=False, fallback="zero"`` with ``teacher_raw`` is that rule, except that
the suite divides by the exact sum and treats a map with a non-positive signed sum as having no
mass (the reference's ``sum + 1e-8`` then flips the weights' sign or makes them huge). The
normalised and mixed modes are not in the reference.

Example:
    >>> import torch
    >>> from suite.mixing.targets import mix_weights, mixed_target
    >>> mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    >>> mask[:, 0, 0] = True
    >>> w_own, w_partner, fallback = mix_weights(mask, None, "area")
    >>> w_own.tolist(), w_partner.tolist()
    ([0.75, 0.75], [0.25, 0.25])
    >>> mixed_target(torch.tensor([0, 1]), w_own, w_partner, 3, 0.0, target="area").tolist()
    [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0]]
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["FALLBACKS", "TARGETS", "Fallback", "Target", "mix_weights", "mixed_target", "normalise"]

TARGETS: tuple[str, ...] = ("area", "teacher_raw", "teacher_norm", "mixed")
"""The TokenMix label rules: ``mix.target`` in the config, ``target`` everywhere in the code."""
FALLBACKS: tuple[str, ...] = ("area", "zero")
Fallback = Literal["area", "zero"]

Target = Literal["area", "teacher_raw", "teacher_norm", "mixed"]


def _target_error(target: object) -> ValueError:
    return ValueError(f"target must be one of {', '.join(TARGETS)}, but got target={target!r}")


def _area_weights(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    partner = mask.flatten(1).float().mean(1)
    return 1.0 - partner, partner


def _partner_of(t: torch.Tensor, partner: torch.Tensor | None) -> torch.Tensor:
    return t.flip(0) if partner is None else t.index_select(0, partner)


def normalise(maps: torch.Tensor, *, clamp_negative: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps ``(B, h, w)`` scaled to sum 1 (negatives counted as 0 first when ``clamp_negative``),
    and ``(B,)`` whether each had positive mass; a map without it becomes all 0."""
    a = maps.float()
    if clamp_negative:
        a = a.clamp_min(0.0)
    total = a.flatten(1).sum(1)
    has_mass = total > 0
    scaled = a / torch.where(has_mass, total, 1.0).view(-1, 1, 1)
    return torch.where(has_mass.view(-1, 1, 1), scaled, 0.0), has_mass


def mix_weights(
    mask: torch.Tensor,
    maps: torch.Tensor | None,
    target: Target,
    *,
    partner: torch.Tensor | None = None,
    fallback: Fallback = "area",
    clamp_negative: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights of the own and the partner label for every mixed image.

    Args:
        mask: Token mask ``(B, G, G)`` or a shared ``(1, G, G)``, ``True`` where the partner shows.
        maps: Activation maps ``(B, G, G)`` of each image's ground-truth class, at any scale
            (normalised here, see ``normalise``). Required by the teacher targets, ignored by ``area``.
        target: ``area``, ``teacher_raw``, ``teacher_norm`` or ``mixed`` (``mix.target``; see the
            module docstring).
        partner: Index ``(B,)`` of each sample's partner; default ``B - 1 - i`` (``flip(0)``).
            Mixing in groups (``suite.mixing.tokenmix.group_partners``) pairs inside each group.
        fallback: What a sample without teacher signal gets: the ``area`` weights (the suite's
            default) or ``zero``: the teacher weights as they are (the reference).
        clamp_negative: Count negative map values as 0 before normalising (the suite's default;
            the reference does not clamp).

    Returns:
        ``(w_own, w_partner, fallback)``, each of shape ``(B,)`` (``(1,)`` for a shared mask in
        ``area`` mode without maps; it broadcasts in ``mixed_target``). ``fallback`` is ``True``
        where the teacher gave no signal (whatever the ``fallback`` option then did).

    Raises:
        ValueError: For an unknown target or fallback, missing maps for a teacher target, or
            mismatched shapes.
    """
    if target not in TARGETS:
        raise _target_error(target)
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, but got fallback={fallback!r}")
    if mask.dim() != 3 or mask.shape[1] != mask.shape[2]:
        raise ValueError(
            f"mask must have shape (B, G, G) or (1, G, G), but got mask.shape={tuple(mask.shape)}"
        )
    mask = mask.bool()
    if target == "area" and maps is None:
        w_own, w_partner = _area_weights(mask)
        return w_own, w_partner, torch.zeros_like(w_own, dtype=torch.bool)
    if maps is None:
        raise ValueError(
            f"maps must be given for target={target!r} (activation maps of the teacher), but got maps=None"
        )
    if maps.dim() != 3 or maps.shape[1:] != mask.shape[1:] or mask.shape[0] not in (1, maps.shape[0]):
        raise ValueError(
            f"maps must have shape (B, G, G) matching mask.shape={tuple(mask.shape)}, "
            f"but got maps.shape={tuple(maps.shape)}"
        )
    mask = mask.expand(maps.shape[0], -1, -1)
    area_own, area_partner = _area_weights(mask)
    if target == "area":
        return area_own, area_partner, torch.zeros_like(area_own, dtype=torch.bool)
    a, has_mass = normalise(maps, clamp_negative=clamp_negative)
    m = mask.float()
    t_own = (a * (1.0 - m)).flatten(1).sum(1)
    t_partner = (_partner_of(a, partner) * m).flatten(1).sum(1)
    t_total = t_own + t_partner
    no_signal = ~(has_mass & _partner_of(has_mass, partner)) | (t_total <= 0)
    if target == "teacher_raw":
        w_own, w_partner = t_own, t_partner
    elif target == "teacher_norm" or target == "mixed":
        positive = t_total > 0
        safe = torch.where(positive, t_total, 1.0)
        w_own = torch.where(positive, t_own / safe, 0.0)
        w_partner = torch.where(positive, t_partner / safe, 0.0)
        if target == "mixed":
            w_own, w_partner = 0.5 * (w_own + area_own), 0.5 * (w_partner + area_partner)
    else:
        raise _target_error(target)
    if fallback == "area":
        w_own = torch.where(no_signal, area_own, w_own)
        w_partner = torch.where(no_signal, area_partner, w_partner)
    return w_own, w_partner, no_signal


def mixed_target(
    y: torch.Tensor,
    w_own: torch.Tensor,
    w_partner: torch.Tensor,
    num_classes: int,
    smoothing: float,
    *,
    target: Target,
    partner: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft target ``w_own * y_own + w_partner * y_partner`` with label smoothing.

    The partner of sample ``i`` is ``B - 1 - i`` (``y.flip(0)``). With ``off = smoothing / C``:

    * ``area``, ``teacher_norm``, ``mixed`` (weights sum to 1): timm's convention, each one-hot
      label smoothed to ``on = 1 - smoothing + off`` / ``off`` and then weighted, i.e.
      ``out = off * (w_own + w_partner) + (1 - smoothing) * (w_own * e_own + w_partner * e_partner)``.
    * ``teacher_raw``: the reference's rule. Each label becomes a one-hot with on-value
      ``w - smoothing / 2 + off / 2`` and off-value ``off / 2``, and the two are added::

          out = off + (w_own - smoothing / 2) * e_own + (w_partner - smoothing / 2) * e_partner

      so every class gets ``off``, the own class ``w_own - smoothing / 2 + off``, the partner class
      ``w_partner - smoothing / 2 + off`` (both, summed, when the labels agree). The row sums to
      ``w_own + w_partner`` (in ``[0, 2]``); an entry goes negative when a weight is below
      ``smoothing / 2 - off``. That is faithful; it suits the reference's BCE-with-logits loss.

    Args:
        y: Class indices ``(B,)``.
        w_own: Own-label weights ``(B,)`` (or ``(1,)``), from ``mix_weights``.
        w_partner: Partner-label weights, same shape.
        num_classes: Number of classes C.
        smoothing: Label smoothing in ``[0, 1)``.
        target: The label rule the weights were computed for.
        partner: Index ``(B,)`` of each sample's partner; default ``B - 1 - i`` (``flip(0)``).

    Returns:
        Float tensor ``(B, C)``.

    Raises:
        ValueError: For an unknown target or an invalid argument.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, but got num_classes={num_classes!r}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), but got smoothing={smoothing}")
    if y.dim() != 1:
        raise ValueError(f"y must have shape (B,), but got y.shape={tuple(y.shape)}")
    y = y.long()
    b = y.shape[0]
    y_partner = _partner_of(y, partner)
    w_own = w_own.float().reshape(-1, 1).expand(b, 1)
    w_partner = w_partner.float().reshape(-1, 1).expand(b, 1)
    off = smoothing / num_classes
    if target == "area" or target == "teacher_norm" or target == "mixed":
        out = (off * (w_own + w_partner)).expand(b, num_classes).contiguous()
        out.scatter_add_(1, y.view(b, 1), (1.0 - smoothing) * w_own)
        out.scatter_add_(1, y_partner.view(b, 1), (1.0 - smoothing) * w_partner)
    elif target == "teacher_raw":
        out = torch.full((b, num_classes), off, device=y.device)
        out.scatter_add_(1, y.view(b, 1), w_own - 0.5 * smoothing)
        out.scatter_add_(1, y_partner.view(b, 1), w_partner - 0.5 * smoothing)
    else:
        raise _target_error(target)
    return out
