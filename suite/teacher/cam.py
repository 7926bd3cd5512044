"""Class-activation maps of a teacher, on the token grid, for TokenMix's content-based targets.

TokenMix (Liu et al., ECCV 2022, https://arxiv.org/abs/2207.08409; reference code
https://github.com/Sense-X/TokenMix) weights the two labels of a mixed image by how much of each
image's class activation stays visible. This module computes that activation: a dense class
activation map (CAM, Zhou et al. 2016) for each image's ground-truth class, in logit space, i.e.
the classifier applied at every location of the last feature map before pooling.

* CNNs (timm ``forward_features`` returns ``NCHW``, or ``NHWC`` for models whose ``output_fmt``
  says so): the classifier from ``model.get_classifier()`` (a ``Linear`` or a 1x1 ``Conv2d``) is
  applied as a 1x1 convolution including its bias. Only the ground-truth row of the weight is
  used, so the cost is one dot product per location, not one per class.
* ViT-like models (``forward_features`` returns ``NLC`` tokens): the ``model.num_prefix_tokens``
  prefix tokens (class, distillation, registers) are dropped, ``fc_norm`` is applied when it is not
  ``Identity``, then the head on every patch token; the result is reshaped to the patch grid.
  Distilled models with two heads use the mean of both, as their eval-mode forward does.

Top-k gating (``topk``, the reference's 5): the classifier is applied for *all* classes at every
location, and the ground-truth class's value is kept only where that class is among the ``topk``
highest logits of the location (fewer than ``topk`` classes score strictly higher; ties keep it),
else it is 0. This is what the reference's maps hold: raw 1x1-conv logits (no softmax) of only
the top-5 classes per location, so the ground-truth channel is zero wherever the teacher sees
another class there. Gated maps are sparser than dense CAMs and move the teacher weights further
from area weights. ``topk=None`` keeps the dense ground-truth map (one dot product per location
instead of one per class). Gating happens at the teacher's own resolution, before resizing, as the
reference gates its stored maps before cropping them.

The map is then resized to the token grid G x G: adaptive average pooling when the feature map is
an integer multiple of G (each token gets the mean of its feature cells), else bilinear
interpolation (antialiased when shrinking). Negatives are clamped to 0 and each map is normalised
to sum 1 (``clamp_negative=False``, the reference's rule: divided by its signed sum, negatives
kept); a map with no positive mass is all-zero, and ``teacher.fallback`` says what its targets get
(``suite.mixing.targets``).

Which teachers give a faithful CAM: CNNs whose head is global average pooling followed by one
linear layer (ResNets, RegNets, EfficientNets, NFNets such as the reference's NFNet-F6); there
the CAM averaged over locations is exactly the logit the classifier sees. CAMs of models whose
head is not linear after pooling (a norm after pooling, as in ConvNeXt, or ``global_pool='avg'``
ViTs, whose ``fc_norm`` is then applied per token) are an approximation, and class-token ViTs
(e.g. DeiT) are the weakest one: their head was trained on the class token only, never on patch
tokens, so applying it per patch token gives a map the classifier never produced.

Deliberate differences from the reference: the reference reads offline maps of an NFNet-F6 at
576 px, cropped with the image by ``roi_align``; here the map is computed online from any timm
model on the same augmented batch that is mixed, so no crop bookkeeping is needed (and the
reference's x/y swap of the crop box does not arise). Offline maps, computed once on whole
images and cut to each crop, are in ``suite.teacher.offline``.

Example:
    >>> import torch, suite, timm
    >>> from suite.teacher.cam import Teacher
    >>> teacher = Teacher.from_module(timm.create_model("resnet18", num_classes=10), topk=5)
    >>> teacher.maps(torch.randn(2, 3, 64, 64), torch.tensor([1, 2]), grid=2).shape
    torch.Size([2, 2, 2])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Teacher",
    "class_activation_maps",
    "class_logit_maps",
    "class_rank",
    "normalise_maps",
    "raw_activation_maps",
    "topk_gate",
]


def _classifier(model: nn.Module, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(K, C)`` and biases ``(K,)`` of the classifier (mean of the heads), in float32."""
    get = getattr(model, "get_classifier", None)
    if get is None:
        raise ValueError(f"model must be a timm model with get_classifier(), but got {type(model).__name__}")
    heads = get()
    heads = tuple(heads) if isinstance(heads, (tuple, list)) else (heads,)
    weights, biases = [], []
    for head in heads:
        if isinstance(head, nn.Linear):
            weight = head.weight
        elif isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.groups == 1:
            weight = head.weight.flatten(1)
        else:
            raise ValueError(
                "model's classifier must be nn.Linear or a 1x1 nn.Conv2d (a model with num_classes > 0), "
                f"but got {type(head).__name__}"
            )
        if weight.shape[1] != channels:
            raise ValueError(
                f"model's classifier expects {weight.shape[1]} input features but the last feature map has "
                f"{channels} channels; layers between pooling and the classifier are not supported"
            )
        weights.append(weight.float())
        bias = head.bias if head.bias is not None else weight.new_zeros(weight.shape[0])
        biases.append(bias.float())
    return torch.stack(weights).mean(0), torch.stack(biases).mean(0)


def _patch_grid(model: nn.Module, x: torch.Tensor, tokens: int) -> tuple[int, int]:
    patch_embed = getattr(model, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        gh, gw = x.shape[-2] // ph, x.shape[-1] // pw
        if gh * gw == tokens:
            return gh, gw
    side = math.isqrt(tokens)
    if side * side == tokens:
        return side, side
    raise ValueError(f"cannot arrange {tokens} patch tokens of {type(model).__name__} on a grid")


def _resize(cam: torch.Tensor, grid: int) -> torch.Tensor:
    h, w = cam.shape[-2:]
    if (h, w) == (grid, grid):
        return cam
    if h % grid == 0 and w % grid == 0:
        return F.adaptive_avg_pool2d(cam.unsqueeze(1), grid).squeeze(1)
    shrink = h > grid or w > grid
    return F.interpolate(
        cam.unsqueeze(1), size=(grid, grid), mode="bilinear", align_corners=False, antialias=shrink
    ).squeeze(1)


def class_activation_maps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    grid: int,
    *,
    topk: int | None = None,
    amp_dtype: torch.dtype | None = torch.bfloat16,
    clamp_negative: bool = True,
) -> torch.Tensor:
    """Ground-truth class maps on the token grid, normalised (``raw_activation_maps`` resized to G x G,
    then ``normalise_maps``)."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive integer, but got grid={grid!r}")
    raw = raw_activation_maps(model, x, y, topk=topk, amp_dtype=amp_dtype)
    return normalise_maps(_resize(raw, grid), clamp_negative=clamp_negative)


def _check_topk(topk: int | None) -> int | None:
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ValueError(f"topk must be a positive integer or None (dense), but got topk={topk!r}")
    return topk


def class_rank(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rank of the ground-truth class at every location: how many classes score strictly higher.

    Args:
        logits: Per-location class scores ``(B, K, h, w)``.
        y: Ground-truth class indices ``(B,)``.

    Returns:
        Long tensor ``(B, h, w)``; 0 where the ground-truth class is the location's top class.
    """
    gt = logits.gather(1, y.long().view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[2:]))
    return (logits > gt).sum(1)


def topk_gate(logits: torch.Tensor, y: torch.Tensor, topk: int | None) -> torch.Tensor:
    """The ground-truth channel of per-location class scores, zero where it is not in the top k.

    Args:
        logits: Per-location class scores ``(B, K, h, w)`` (raw logits, as the reference keeps).
        y: Ground-truth class indices ``(B,)``.
        topk: Classes kept per location; ``None`` keeps the ground-truth channel everywhere.

    Returns:
        ``(B, h, w)``: the ground-truth score where fewer than ``topk`` classes score strictly
        higher, else 0.

    Example:
        >>> logits = torch.tensor([[[[3.0]], [[2.0]], [[1.0]]]])  # 3 classes at one location
        >>> topk_gate(logits, torch.tensor([1]), 1).item(), topk_gate(logits, torch.tensor([1]), 2).item()
        (0.0, 2.0)
    """
    _check_topk(topk)
    if logits.dim() != 4 or y.shape != (logits.shape[0],):
        raise ValueError(
            "logits must have shape (B, K, h, w) and y shape (B,), "
            f"but got {tuple(logits.shape)} and {tuple(y.shape)}"
        )
    gt = logits.gather(1, y.long().view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[2:])).squeeze(1)
    if topk is None:
        return gt
    return torch.where(class_rank(logits, y) < topk, gt, torch.zeros_like(gt))


def normalise_maps(cam: torch.Tensor, *, clamp_negative: bool = True) -> torch.Tensor:
    """Clamp maps ``(B, h, w)`` at 0 (unless ``clamp_negative`` is False) and scale each to sum 1;
    a map without positive mass becomes 0 (the rule of ``suite.mixing.targets.normalise``)."""
    from suite.mixing.targets import normalise

    return normalise(cam, clamp_negative=clamp_negative)[0]


def _feature_grid(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None = torch.bfloat16) -> torch.Tensor:
    """The classifier's input at every location, float32 ``(B, C, h, w)`` (under no_grad).

    The features run under autocast to ``amp_dtype`` on CUDA (``None``: float32)."""
    forward_features = getattr(model, "forward_features", None)
    if forward_features is None:
        raise ValueError(f"model must have forward_features() (a timm model), but got {type(model).__name__}")
    from suite.device.precision import autocast

    with autocast(x.device, amp_dtype):
        feats = forward_features(x)
    if not isinstance(feats, torch.Tensor):
        raise ValueError(f"model.forward_features must return a tensor, but got {type(feats).__name__}")
    feats = feats.float()
    if feats.dim() == 4:
        if getattr(model, "output_fmt", "NCHW") == "NHWC":
            feats = feats.permute(0, 3, 1, 2)
        return feats
    if feats.dim() == 3:
        if getattr(model, "attn_pool", None) is not None:
            raise ValueError(f"model {type(model).__name__} pools with attention; its CAM is not supported")
        tokens = feats[:, int(getattr(model, "num_prefix_tokens", 0)) :]
        fc_norm = getattr(model, "fc_norm", None)
        if fc_norm is not None and not isinstance(fc_norm, nn.Identity):
            tokens = _apply_float(fc_norm, tokens)
        gh, gw = _patch_grid(model, x, tokens.shape[1])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)
    raise ValueError(
        "model.forward_features must return NCHW/NHWC feature maps (CNN) or NLC tokens (ViT), "
        f"but got a tensor of shape {tuple(feats.shape)}"
    )


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), but got x.shape={tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape ({x.shape[0]},), but got y.shape={tuple(y.shape)}")


def class_logit_maps(
    model: nn.Module, x: torch.Tensor, *, amp_dtype: torch.dtype | None = torch.bfloat16
) -> torch.Tensor:
    """Logits of every class at every location, float32 ``(B, K, h, w)``: the classifier as a 1x1 conv.

    Runs under ``torch.no_grad()`` (autocast to ``amp_dtype`` on CUDA for the features, float32 classifier).
    """
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), but got x.shape={tuple(x.shape)}")
    with torch.no_grad():
        feats = _feature_grid(model, x, amp_dtype)
        weight, bias = _classifier(model, feats.shape[1])
        return torch.einsum("bchw,kc->bkhw", feats, weight) + bias.view(1, -1, 1, 1)


def raw_activation_maps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    topk: int | None = None,
    amp_dtype: torch.dtype | None = torch.bfloat16,
) -> torch.Tensor:
    """Class-activation maps of the ground-truth classes at the teacher's own resolution.

    The model is used as it is (put it in eval mode first; ``Teacher`` does). Runs under
    ``torch.no_grad()``, and under autocast to ``amp_dtype`` (the student's, see
    ``suite.device.precision``) when ``x`` is on CUDA; the classifier is applied in float32.

    Args:
        model: A timm CNN (``forward_features`` gives ``NCHW``/``NHWC``) or ViT-like model
            (``forward_features`` gives ``NLC`` tokens), with a classification head.
        x: Images ``(B, 3, H, W)``.
        y: Ground-truth class indices ``(B,)``.
        topk: Keep the ground-truth value only where the class is among the location's ``topk``
            highest logits (see ``topk_gate``; the reference's 5); ``None`` = dense.

    Returns:
        Float32 tensor ``(B, h, w)`` in logit space (the classifier applied at every location of
        the last feature map, or to every patch token), neither clamped nor normalised.

    Raises:
        ValueError: For invalid arguments, or a model whose features are neither ``NCHW``/``NHWC``
            maps nor ``NLC`` tokens, or whose classifier is not linear.
    """
    _check_batch(x, y)
    _check_topk(topk)
    if topk is not None:
        return topk_gate(class_logit_maps(model, x, amp_dtype=amp_dtype), y, topk)
    y = y.long()
    with torch.no_grad():
        feats = _feature_grid(model, x, amp_dtype)
        weight, bias = _classifier(model, feats.shape[1])
        return torch.einsum("bchw,bc->bhw", feats, weight[y]) + bias[y].view(-1, 1, 1)


def _apply_float(module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Apply a (norm) module to float32 tokens, whatever the module's own dtype."""
    params = list(module.parameters())
    if params and params[0].dtype != torch.float32:
        return module(tokens.to(params[0].dtype)).float()
    return module(tokens).float()


class Teacher:
    """A frozen model that supplies TokenMix's activation maps.

    The wrapped module is put in eval mode with gradients off. It must live on the device of the
    batches passed to ``maps``.

    Args:
        model: The teacher, built and loaded.
        topk: Classes kept per location before the ground-truth channel is taken (the
            reference's 5; see the module docstring); ``None`` keeps the dense ground-truth map.
        amp_dtype: autocast dtype of the teacher's forward on CUDA (the student's, from
            ``suite.device.precision``); ``None`` runs it in float32.
        clamp_negative: Clamp negative map values before normalising (``teacher.clamp_negative``;
            the reference does not).

    Example:
        >>> import torch, suite, timm
        >>> teacher = Teacher.from_module(timm.create_model("resnet18", num_classes=10))
        >>> maps = teacher.maps(torch.randn(4, 3, 64, 64), torch.arange(4), grid=4)
        >>> maps.shape
        torch.Size([4, 4, 4])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        topk: int | None = None,
        amp_dtype: torch.dtype | None = torch.bfloat16,
        clamp_negative: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, but got {type(model).__name__}")
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.topk = _check_topk(topk)
        self.amp_dtype = amp_dtype
        self.clamp_negative = clamp_negative

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        *,
        topk: int | None = None,
        amp_dtype: torch.dtype | None = torch.bfloat16,
        clamp_negative: bool = True,
    ) -> Teacher:
        """Wrap an already built (and loaded) model; ``topk`` gates its maps (``None`` = dense)."""
        return cls(model, topk=topk, amp_dtype=amp_dtype, clamp_negative=clamp_negative)

    def maps(
        self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Activation maps ``(B, G, G)`` of the ground-truth classes; see ``class_activation_maps``.

        ``geometry`` is ignored: the online maps come from the augmented batch itself (offline
        maps, ``suite.teacher.offline.OfflineMaps``, need it).
        """
        if self.model.training:
            self.model.eval()
        return class_activation_maps(
            self.model, x, y, grid, topk=self.topk, amp_dtype=self.amp_dtype, clamp_negative=self.clamp_negative
        )
