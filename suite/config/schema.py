"""The run config's schema: one typed section per concern (model, data, mix, teacher, optim,
schedule, eval, run, tracking) and :class:`TrainConfig`, the whole run.

Every default lives here, once. The schema checks types, ranges, choices and cross-field rules
only; what needs this machine (files, the timm registry) is
:func:`suite.train.preflight.check_machine`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from suite.config.strict import Strict

__all__ = [
    "MAPS_PREFIX", "DataConfig", "EvalConfig", "MixConfig", "ModelConfig", "OptimConfig", "RuntimeConfig",
    "ScheduleConfig", "TeacherConfig", "TrackingConfig", "TrainConfig",
]


def _expand_user(value: Path | None) -> Path | None:
    return None if value is None else Path(value).expanduser()



class ModelConfig(Strict):
    """The student: any timm model, built without hub weights."""

    name: str = Field("vit_micro_patch4_32", description="timm model name (suite adds vit_micro_patch4_32, cnn_micro)")
    patch_size: int | None = Field(None, gt=0, description="ViT patch size (default: the name's patchN)")
    embed_dim: int | None = Field(None, gt=0, description="ViT width override")
    depth: int | None = Field(None, gt=0, description="ViT depth override")
    num_heads: int | None = Field(None, gt=0, description="ViT heads override")
    drop_path: float = Field(0.0, ge=0.0, lt=1.0, description="stochastic depth rate")
    checkpoint: Path | None = Field(None, description="initial weights (safetensors, torch, or a suite run)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model kwargs")

    _ckpt = field_validator("checkpoint")(classmethod(lambda cls, v: _expand_user(v)))

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        width, heads = self.embed_dim, self.num_heads
        if self.name == "vit_micro_patch4_32":  # the suite's own ViT: embed_dim 96, 3 heads
            width, heads = width or 96, heads or 3
        if width is not None and heads is not None and width % heads:
            raise ValueError(
                f"model.embed_dim must be divisible by model.num_heads, but got embed_dim={width}, num_heads={heads}"
            )
        return self

    def resolved_patch_size(self) -> int | None:
        """Patch size from the override or the timm name (``..._patch16_...``)."""
        if self.patch_size is not None:
            return self.patch_size
        match = re.search(r"patch(\d+)", self.name)
        return int(match.group(1)) if match else None


# Per-source augmentation defaults: digits must not be flipped, ImageNet uses DeiT's recipe.
_AUG_DEFAULTS: dict[str, dict[str, Any]] = {
    "builtin": {"hflip": 0.0, "rand_augment": None, "random_erasing": 0.0, "scale": (0.7, 1.0)},
    "folder": {"hflip": 0.5, "rand_augment": "rand-m9-mstd0.5-inc1", "random_erasing": 0.25, "scale": (0.08, 1.0)},
}


class DataConfig(Strict):
    """Where images come from and how they are augmented.

    ``data=builtin`` is shorthand for ``data.source=builtin``; ``data=/path`` for an
    ImageFolder tree (``train/`` and ``val/`` below it).
    """

    source: Literal["builtin", "folder"] = Field("builtin", description="builtin digits-on-clutter or an ImageFolder tree")
    root: Path | None = Field(None, description="ImageFolder root holding train/ and val/")
    img_size: int = Field(32, gt=0, description="input resolution (pixels)")
    batch_size: int = Field(
        128, gt=0, description="global training batch: all processes together (each loads batch_size / processes)"
    )
    train_size: int | None = Field(None, gt=0, description="builtin: images to generate (default 6000); folder: cap")
    val_size: int | None = Field(None, gt=0, description="builtin: images to generate (default 1000); folder: cap")
    data_seed: int = Field(0, description="seed of the generated builtin dataset")
    workers: int | None = Field(None, ge=0, description="DataLoader workers (default: from the CPU allocation)")
    hflip: float | None = Field(None, ge=0.0, le=1.0, description="horizontal flip probability")
    rand_augment: str | None = Field(None, description="timm RandAugment string, e.g. rand-m9-mstd0.5-inc1")
    random_erasing: float | None = Field(None, ge=0.0, le=1.0, description="random erasing probability")
    scale: tuple[float, float] | None = Field(None, description="random-resized-crop scale range")
    aug_order: Literal["timm", "reference"] = Field(
        "timm",
        description="timm: crop -> flip -> RandAugment (timm's transforms); reference: flip -> RandAugment on the "
        "whole image -> random-resized crop, the map following each op (TokenMix/TokenLabeling's order)",
    )
    repeated_aug: int = Field(
        1, ge=1, description="DeiT's repeated augmentation: each image this many times per epoch (DeiT: 3; 1 = off)"
    )

    @model_validator(mode="before")
    @classmethod
    def expand_shorthand(cls, value: Any) -> Any:
        """``builtin`` or a folder path as the section it stands for (from its spelling alone)."""
        if isinstance(value, str):
            return {"source": "builtin"} if value == "builtin" else {"source": "folder", "root": value}
        return value

    @model_validator(mode="after")
    def _resolve(self) -> DataConfig:
        if self.source == "folder" and self.root is None:
            raise ValueError("data.root is required when data.source=folder")
        defaults = _AUG_DEFAULTS[self.source]
        updates = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.source == "builtin":
            if self.train_size is None:
                updates["train_size"] = 6000
            if self.val_size is None:
                updates["val_size"] = 1000
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"data.scale must satisfy 0 < lo <= hi <= 1, but got {self.scale}")
        if updates:
            # Bypass validate_assignment recursion: set resolved defaults directly.
            for key, val in updates.items():
                object.__setattr__(self, key, val)
        return self


class MixConfig(Strict):
    """Batch mixing, with DeiT's switch between a region branch and Mixup.

    With probability ``prob`` a batch is mixed; then with probability ``switch_prob`` it
    takes the region branch (CutMix for ``cutmix``, TokenMix for ``tokenmix``), else
    Mixup (only when ``mixup_alpha > 0``). ``mixup_alpha=0`` gives pure CutMix/TokenMix.
    """

    method: Literal["none", "mixup", "cutmix", "tokenmix"] = Field("none", description="mixing method")
    prob: float = Field(1.0, ge=0.0, le=1.0, description="probability that a batch is mixed")
    switch_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of the CutMix/TokenMix branch")
    mixup_alpha: float = Field(0.8, ge=0.0, description="Beta(a, a) of the Mixup branch; 0 disables it")
    cutmix_alpha: float = Field(1.0, gt=0.0, description="Beta(a, a) of CutMix's box area")
    mode: Literal["batch", "pair", "elem"] = Field(
        "batch", description="timm Mixup mode (mixup, cutmix, and TokenMix's Mixup branch)"
    )
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="label smoothing of (mixed) targets")
    mask_mode: Literal["block", "random", "box"] = Field("block", description="TokenMix mask generator")
    mask_ratio: float | tuple[float, float] = Field(0.5714, description="fraction of tokens from the partner, or [lo, hi]")
    token_grid: int | None = Field(None, gt=0, description="TokenMix grid G (default: the model's patch grid)")
    min_aspect: float = Field(0.3, gt=0.0, le=1.0, description="block masks: minimum rectangle aspect ratio")
    per_sample: bool = Field(False, description="TokenMix: one mask per sample instead of per batch")
    groups: int | None = Field(
        None,
        ge=1,
        description="one switch draw per group of G images (then its Mixup lam or TokenMix mask, "
        "per image with per_sample), partners inside it (reference: 128); null = whole batch",
    )
    target: Literal["auto", "area", "teacher_raw", "teacher_norm", "mixed"] = Field(
        "auto", description="TokenMix label: auto = teacher_raw with a teacher, else area"
    )

    @field_validator("mask_ratio")
    @classmethod
    def _ratio(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        lo, hi = (value, value) if isinstance(value, (int, float)) else value
        if not 0 < lo <= hi < 1:
            raise ValueError(f"mask_ratio must be in (0, 1) (a range needs lo <= hi), but got {value}")
        return value


MAPS_PREFIX = "maps:"


class TeacherConfig(Strict):
    """Teacher for TokenMix's activation-map targets: online from a checkpoint, or offline maps.

    ``teacher=none`` disables it (area targets). ``teacher=<path>`` is shorthand for
    ``teacher.checkpoint=<path>`` and ``teacher=maps:<dir>`` for ``teacher.maps=<dir>``: the
    shorthand is read from its spelling alone, never from the filesystem, so every machine
    resolves it (and the run id) the same way. A suite run directory or its ``checkpoint.pt``
    carries the architecture, so ``teacher.model`` may be left empty for those. Whether the
    files exist is checked by :func:`suite.train.preflight.check_machine`, where the run executes.
    """

    model: str | None = Field(None, description="timm name of the teacher (read from a suite checkpoint if empty)")
    checkpoint: Path | None = Field(None, description="teacher weights: suite run dir/checkpoint.pt, safetensors, torch")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model kwargs")
    maps: Path | None = Field(None, description="offline maps directory from `suite maps build` (no teacher forward)")
    topk: int | None = Field(
        None,
        ge=1,
        description="keep the GT map only where GT is among the top-k classes per location (reference: 5); "
        "null = dense",
    )
    fallback: Literal["area", "zero"] = Field(
        "area",
        description="a map without positive mass: area = both images weighted by area; zero = that image's weight "
        "is 0 and its partner's is kept (the reference)",
    )
    clamp_negative: bool = Field(
        True, description="clamp negative activation-map values to 0 before normalising (the reference does not)"
    )

    @model_validator(mode="before")
    @classmethod
    def expand_shorthand(cls, value: Any) -> Any:
        """``none``, ``maps:<dir>`` or a checkpoint path as the section it stands for (from its spelling alone)."""
        if value is None or value == "none":
            return {}
        if isinstance(value, str):
            if value.startswith(MAPS_PREFIX):
                return {"maps": value[len(MAPS_PREFIX) :]}
            return {"checkpoint": value}
        return value

    @field_validator("maps", "checkpoint")
    @classmethod
    def _paths(cls, value: Path | None) -> Path | None:
        return _expand_user(value)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        return None if value in (None, "none") else value

    @model_validator(mode="after")
    def _needs_weights(self) -> TeacherConfig:
        if self.maps is not None and (self.checkpoint is not None or self.model is not None):
            raise ValueError("teacher.maps replaces the online teacher: set either teacher.maps or teacher.checkpoint")
        if self.model is not None and self.checkpoint is None:
            raise ValueError("teacher.checkpoint is required with teacher.model (no hub weights are downloaded)")
        return self

    @property
    def enabled(self) -> bool:
        return self.checkpoint is not None or self.maps is not None


class OptimConfig(Strict):
    """Optimiser and loss (DeiT recipe, scaled down by config)."""

    name: Literal["adamw", "sgd"] = Field("adamw", description="optimiser")
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    weight_decay: float = Field(0.05, ge=0.0, description="weight decay (not on norms/biases)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    clip_grad: float | None = Field(None, gt=0.0, description="gradient norm clip")
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0, description="EMA of weights (evaluated too)")
    loss: Literal["auto", "soft_ce", "bce"] = Field(
        "auto", description="soft_ce, bce (BCE-with-logits), or auto: bce for mix.target=teacher_raw, else soft_ce"
    )
    lr_scale: Literal["none", "linear"] = Field(
        "none", description="linear: DeiT's scaling, peak lr = optim.lr x data.batch_size (global) / 512"
    )
    accum_steps: int = Field(
        1,
        ge=1,
        description="gradient accumulation: each optimiser step sums this many micro-batches of each process; "
        "data.batch_size stays the global batch (1 GPU x 8 steps = 8 GPUs x 1 step)",
    )

    def effective_lr(self, global_batch: int) -> float:
        """The peak learning rate the optimiser uses for a global batch."""
        return self.lr * global_batch / 512.0 if self.lr_scale == "linear" else self.lr


class ScheduleConfig(Strict):
    """Learning-rate schedule: linear warmup then cosine, updated every step."""

    epochs: int = Field(10, gt=0, description="training epochs")
    warmup_epochs: float = Field(1.0, ge=0.0, description="linear warmup epochs")
    warmup_lr: float = Field(1e-6, ge=0.0, description="learning rate at step 0")
    min_lr: float = Field(1e-5, ge=0.0, description="final learning rate")
    cooldown_epochs: int = Field(0, ge=0, description="epochs at min_lr after the cosine (reference: 300 + 10)")

    @property
    def total_epochs(self) -> int:
        """Epochs trained: the cosine schedule's ``epochs`` plus ``cooldown_epochs`` at ``min_lr``."""
        return self.epochs + self.cooldown_epochs


class EvalConfig(Strict):
    """Evaluation after each epoch and the occlusion-robustness test at the end."""

    every: int = Field(1, gt=0, description="evaluate every N epochs (and always after the last)")
    subset: int | None = Field(
        None, gt=0, description="evaluate only N validation images (a seeded random subset, the same at every "
        "evaluation) before the last epoch (curves, pruning); the last epoch, best epoch and occlusion use all",
    )
    batch_size: int = Field(256, gt=0, description="evaluation batch size of each process")
    occlusion: list[float] = Field([0.25, 0.5, 0.75], description="fractions of patches dropped at test time")
    occlusion_patch: int | None = Field(None, gt=0, description="occluded cell size (default: model patch size)")
    occlusion_seed: int = Field(0, description="seed of the occlusion masks (same for every run)")

    @field_validator("occlusion")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for frac in value:
            if not 0 < frac < 1:
                raise ValueError(f"occlusion fractions must be in (0, 1), but got {frac}")
        return value


class RuntimeConfig(Strict):
    """Seed, output location and hardware use."""

    seed: int = Field(0, description="seed of everything random in training")
    output_root: Path = Field(Path("runs"), description="run directories go to <output_root>/<run_id>/")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(None, gt=0, description="torch threads (default: SLURM_CPUS_PER_TASK or affinity)")
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU): autocast to run.amp_dtype")
    amp_dtype: Literal["auto", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype on CUDA: auto = bf16 where native (Ampere+), else fp16 with loss scaling"
    )
    channels_last: bool = Field(True, description="channels_last memory format on CUDA")
    log_every: int = Field(50, gt=0, description="steps between host reads of the running loss (progress, NaN check)")
    checkpoint_every: int = Field(
        1, gt=0, description="epochs between checkpoints (the last epoch and a stop always write one)"
    )
    compile: bool = Field(
        False,
        description="torch.compile the student's training forward (evaluation and the teacher stay eager); "
        "how a run executes, not in its id",
    )
    keep_checkpoints: bool = Field(
        False,
        description="keep checkpoint.pt (optimiser state) and checkpoint.prev.pt of a finished run; by default a "
        "finished run keeps its final weights only (student and EMA, safetensors)",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, but got {value!r}")
        return value


class TrackingConfig(Strict):
    """Weights & Biases sink (the run directory is the source of truth)."""

    mode: Literal["offline", "online", "disabled"] = Field("offline", description="W&B mode")
    project: str = Field("tokenmix-suite", description="W&B project")
    entity: str | None = Field(None, description="W&B entity")
    group: str | None = Field(None, description="W&B group (sweeps set the sweep name)")
    tags: list[str] = Field(default_factory=list, description="W&B tags")
    system_metrics: bool = Field(True, description="W&B system metrics (GPU/CPU utilisation, memory)")


class TrainConfig(Strict):
    """A whole run. Sections: model, data, mix, teacher, optim, schedule, eval, run, tracking."""

    name: str | None = Field(None, description="human label (not part of the run id)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RuntimeConfig = Field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        patch = self.model.resolved_patch_size()
        if patch is not None and self.data.img_size % patch:
            raise ValueError(
                f"data.img_size must be divisible by the patch size {patch} (model.patch_size / "
                f"{self.model.name}), but got data.img_size={self.data.img_size}"
            )
        if self.mix.method != "none" and self.data.batch_size % 2:
            raise ValueError(f"data.batch_size must be even when mixing, but got {self.data.batch_size}")
        if self.data.batch_size % self.optim.accum_steps:
            raise ValueError(
                f"optim.accum_steps={self.optim.accum_steps} must divide data.batch_size={self.data.batch_size} "
                "(equal micro-batches)"
            )
        groups = self.mix.groups
        if groups is not None and (groups % 2 or self.data.batch_size % groups):
            raise ValueError(
                f"mix.groups must be even and divide data.batch_size={self.data.batch_size} (partners pair inside "
                f"a group), but got mix.groups={groups}"
            )
        if self.mix.method == "tokenmix":
            grid = self.mix.token_grid or (self.data.img_size // patch if patch else None)
            if grid is None:
                raise ValueError("mix.token_grid is required for models without a patch size")
            if self.data.img_size % grid:
                raise ValueError(
                    f"mix.token_grid must divide data.img_size={self.data.img_size}, but got token_grid={grid}"
                )
            object.__setattr__(self.mix, "token_grid", grid)
            target = self.mix.target
            if target == "auto":
                target = "teacher_raw" if self.teacher.enabled else "area"
                object.__setattr__(self.mix, "target", target)
            if target != "area" and not self.teacher.enabled:
                raise ValueError(
                    f"mix.target={target} needs a teacher (teacher.checkpoint), but teacher is none; "
                    "use mix.target=area or set teacher=<checkpoint>"
                )
        elif self.teacher.enabled:
            raise ValueError(f"teacher is only used by mix.method=tokenmix, but mix.method={self.mix.method}")
        # teacher_raw targets do not sum to 1 and can be negative: only BCE reads them as meant
        raw = self.mix.method == "tokenmix" and self.mix.target == "teacher_raw"
        if self.optim.loss == "auto":
            object.__setattr__(self.optim, "loss", "bce" if raw else "soft_ce")
        elif raw and self.optim.loss == "soft_ce":
            raise ValueError(
                "mix.target=teacher_raw needs optim.loss=bce (or auto), but got optim.loss=soft_ce: its rows sum "
                "to w_own + w_partner and can be negative, which soft-target cross-entropy turns into a per-sample "
                "loss weight (use mix.target=teacher_norm with soft_ce)"
            )
        return self