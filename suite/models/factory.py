"""Building students and teachers with timm, without hub weights.

Registers two small models with timm's registry so the built-in 32 px data has a sensible
default (``vit_micro_patch4_32``: an 8×8 token grid, like a 224 px ViT's 14×14 in
miniature) and a cheap CNN teacher whose last feature map keeps spatial detail
(``cnn_micro``: stride 4, an 8×8 activation map at 32 px).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from suite.models.weights import WeightsError, read_weights

__all__ = ["CnnMicro", "build_model", "load_weights"]


def _drop_timm_internals(kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm's factory passes pretrained_cfg/cache_dir to entrypoints; plain modules take none."""
    return {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}


@register_model
def vit_micro_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT for 32 px inputs: patch 4 (8×8 tokens), width 96, depth 4, 3 heads, mean-pooled tokens.

    Mean pooling instead of a class token: on small data it trains markedly faster.
    """
    if pretrained:
        raise ValueError("vit_micro_patch4_32 has no pretrained weights; use model.checkpoint")
    args: dict[str, Any] = dict(
        img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0, global_pool="avg", class_token=False
    )
    args.update(_drop_timm_internals(kwargs))
    return VisionTransformer(**args)


class CnnMicro(nn.Module):
    """A small all-conv CNN (stride 4) with timm's classifier API, for CAM teachers."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 64, drop_rate: float = 0.0, **_: Any):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
            )

        self.num_classes = num_classes
        self.num_features = 2 * width
        self.features = nn.Sequential(
            block(in_chans, width // 2, 1),
            block(width // 2, width, 2),
            block(width, width, 1),
            block(width, 2 * width, 2),
            block(2 * width, 2 * width, 1),
        )
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.default_cfg = {"num_classes": num_classes, "input_size": (in_chans, 32, 32)}

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def cnn_micro(pretrained: bool = False, **kwargs: Any) -> CnnMicro:
    """Small CNN teacher (stride 4); ``img_size``/``drop_path_rate`` are accepted and ignored."""
    if pretrained:
        raise ValueError("cnn_micro has no pretrained weights; use a checkpoint")
    kwargs = _drop_timm_internals(kwargs)
    kwargs.pop("img_size", None)
    kwargs.pop("drop_path_rate", None)
    return CnnMicro(**kwargs)


def build_model(
    name: str,
    *,
    num_classes: int,
    img_size: int | None = None,
    overrides: dict[str, Any] | None = None,
    checkpoint: Path | None = None,
) -> nn.Module:
    """Create a timm model (``pretrained=False``) and optionally load weights from a file.

    ``img_size`` is passed when the architecture accepts it (ViTs), and dropped for models
    that do not (most CNNs adapt to any size through global pooling).
    """
    kwargs = {k: v for k, v in (overrides or {}).items() if v is not None}
    kwargs["num_classes"] = num_classes
    if img_size is not None:
        kwargs.setdefault("img_size", img_size)
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err) or "img_size" in (overrides or {}):
            raise
        kwargs.pop("img_size")
        model = timm.create_model(name, pretrained=False, **kwargs)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model


def load_weights(model: nn.Module, path: Path | str) -> None:
    """Load weights strictly; a classifier of another size is an error that says so."""
    state, _ = read_weights(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit {type(model).__name__}: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
