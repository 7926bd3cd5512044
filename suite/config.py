"""The one typed run configuration of the suite.

Every default lives here, once. A run is described by a :class:`TrainConfig`, loaded from
YAML plus ``key.sub=value`` overrides (:func:`load_config`), validated before any work
starts, and saved resolved (``config.json``) with the run. Bad input raises
:class:`ConfigError` whose message names the dotted field and the reason; an unknown key
lists the valid keys with their defaults (submitit's ``_internal_update_parameters`` idea).

The run id (:func:`run_id`) is a hash of the resolved fields that differ from their defaults,
minus the fields that only say where or how to run (output root, device, threads, workers,
tracking), so the same experiment always lands in the same run directory and the same W&B run,
and a new option with a default leaves every existing id unchanged. The schema checks types,
ranges, choices and cross-field rules only; what needs this machine (files, the timm registry)
is :func:`suite.train.preflight.check_machine`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "MixConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "TeacherConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "ID_VERSION",
    "run_id",
    "stored_config",
    "teacher_identity",
    "validate_config",
]

# Keys that config.json holds beside the run config itself (what the run is and how it ran).
RECORD_KEYS: tuple[str, ...] = ("run_id", "id_version", "legacy_id", "teacher_identity", "teacher_sha256", "effective")


def stored_config(record: dict[str, Any]) -> dict[str, Any]:
    """The run config inside a ``config.json`` record (its record-only keys dropped)."""
    return {k: v for k, v in record.items() if k not in RECORD_KEYS}


# Fields that change where/how a run executes, not what it computes.
OUTPUT_ONLY_FIELDS: tuple[str, ...] = (
    "name",
    "run.output_root",
    "run.device",
    "run.threads",
    "data.workers",
    "eval.batch_size",
    "run.log_every",
    "run.checkpoint_every",
    "tracking",
)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the dotted field(s)."""


def _numeric(annotation: Any) -> bool:
    """An int/float field (or one of them or None): where YAML's true/false must not pass as 1/0."""
    import types
    import typing

    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        """``schedule.epochs=true`` is a mistake, not 1: a boolean in a number field fails as text."""
        if isinstance(data, dict):
            numeric = _numeric_fields(cls)
            for name, value in data.items():
                if isinstance(value, bool) and name in numeric:
                    data = {**data, name: str(value).lower()}
        return data


@functools.cache
def _numeric_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in cls.model_fields.items() if _numeric(field.annotation))


def _expand_user(value: Path | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


class ModelConfig(_Strict):
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


class DataConfig(_Strict):
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

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
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


class MixConfig(_Strict):
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
    mode: Literal["batch", "pair", "elem"] = Field("batch", description="timm Mixup mode (mixup/cutmix)")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="label smoothing of (mixed) targets")
    mask_mode: Literal["block", "random", "box"] = Field("block", description="TokenMix mask generator")
    mask_ratio: float | tuple[float, float] = Field(0.5714, description="fraction of tokens from the partner, or [lo, hi]")
    token_grid: int | None = Field(None, gt=0, description="TokenMix grid G (default: the model's patch grid)")
    min_aspect: float = Field(0.3, gt=0.0, le=1.0, description="block masks: minimum rectangle aspect ratio")
    per_sample: bool = Field(False, description="TokenMix: one mask per sample instead of per batch")
    groups: int | None = Field(
        None,
        ge=1,
        description="one switch, lam and mask per group of G images, partners inside it (reference: 128); "
        "null = whole batch",
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


class TeacherConfig(_Strict):
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

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
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


class OptimConfig(_Strict):
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

    def effective_lr(self, global_batch: int) -> float:
        """The peak learning rate the optimiser uses for a global batch."""
        return self.lr * global_batch / 512.0 if self.lr_scale == "linear" else self.lr


class ScheduleConfig(_Strict):
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


class EvalConfig(_Strict):
    """Evaluation after each epoch and the occlusion-robustness test at the end."""

    every: int = Field(1, gt=0, description="evaluate every N epochs (and always after the last)")
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


class RuntimeConfig(_Strict):
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

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, but got {value!r}")
        return value


class TrackingConfig(_Strict):
    """Weights & Biases sink (the run directory is the source of truth)."""

    mode: Literal["offline", "online", "disabled"] = Field("offline", description="W&B mode")
    project: str = Field("tokenmix-suite", description="W&B project")
    entity: str | None = Field(None, description="W&B entity")
    group: str | None = Field(None, description="W&B group (sweeps set the sweep name)")
    tags: list[str] = Field(default_factory=list, description="W&B tags")
    system_metrics: bool = Field(True, description="W&B system metrics (GPU/CPU utilisation, memory)")


class TrainConfig(_Strict):
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
        groups = self.mix.groups
        if groups is not None and (groups % 2 or self.data.batch_size % groups):
            raise ValueError(
                f"mix.groups must be even and divide data.batch_size={self.data.batch_size} (partners pair inside "
                f"a group), but got mix.groups={groups}"
            )
        if groups is not None and self.mix.method == "tokenmix" and self.mix.mode != "batch":
            raise ValueError(
                f"mix.groups draws one Mixup lam per group: it needs mix.mode=batch, but got {self.mix.mode}"
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

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: the dotted fields whose resolved value differs from its default.

        Output-only fields (where and how a run executes) are left out. Options added later with
        a default are equal to it in every existing config, so they never enter an old run's
        identity, and upgrading the suite keeps every run id.
        """
        defaults = _default_leaves(type(self))
        values = _leaves(json.loads(self.model_dump_json()))  # inf/nan as null, as ids always read them
        if self.teacher.checkpoint is not None:  # what the teacher is, not where it lies
            values["teacher.checkpoint"] = teacher_identity(self.teacher.checkpoint)
        if self.teacher.maps is not None:
            values["teacher.maps"] = maps_identity(self.teacher.maps)
        return {
            key: value
            for key, value in sorted(values.items())
            if not _output_only(key) and (key not in defaults or defaults[key] != value)
        }


RUN_ID_PATTERN = re.compile(r"^[a-z]+-[0-9a-f]{12}$")  # <method>-<12 hex>
MAPS_STEP_PATTERN = re.compile(r"^maps-[0-9a-f]{12}$")  # a sweep's maps build step (suite.teacher.maps_step)
_SHA_CACHE: dict[tuple[str, int, int, int], str] = {}


def teacher_run_folder(path: Path | str) -> Path | None:
    """The suite run folder a teacher path names (``<root>/<run_id>`` or its ``checkpoint.pt``), else None.

    Read from the spelling alone, so every machine agrees.
    """
    path = Path(path)
    if path.name == "checkpoint.pt" and _is_run_name(path.parent.name):
        return path.parent
    if _is_run_name(path.name):
        return path
    return None


def _is_run_name(name: str) -> bool:
    return bool(RUN_ID_PATTERN.match(name)) and not MAPS_STEP_PATTERN.match(name)


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's content (cached per path, inode, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.absolute()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def teacher_identity(path: Path | str) -> str:
    """What the run id records of a teacher: ``run:<run_id>`` for a suite run folder (or its
    ``checkpoint.pt``), else the path as given.

    Read from the spelling alone, so a laptop and a cluster node agree. A run folder's id names
    what that run computed, wherever the folder lies. Any other file is named by its path, and
    its content is pinned another way: the trainer records the file's SHA-256 in ``config.json``
    when the run starts and refuses to resume, or to report a finished student, against a file
    whose content changed (see ``suite.train.trainer.Trainer``).
    """
    folder = teacher_run_folder(path)
    return f"run:{folder.name}" if folder is not None else str(path)


def maps_identity(path: Path | str) -> str:
    """What the run id records of offline maps: ``step:<id>`` for a sweep's maps build step folder
    (``<output_root>/maps-<12 hex>``, whose id hashes what the maps were built from), else the path.

    Read from the spelling alone, like :func:`teacher_identity`.
    """
    name = Path(path).name
    return f"step:{name}" if MAPS_STEP_PATTERN.match(name) else str(path)


# Version of the run-id rule. 1: hash of every resolved field (ids changed whenever an option was
# added); 2: hash of the non-default resolved fields. Run folders record it in config.json.
ID_VERSION = 2


@functools.cache
def _output_only(dotted: str) -> bool:
    return any(dotted == f or dotted.startswith(f"{f}.") for f in OUTPUT_ONLY_FIELDS)


@functools.cache
def _default_leaves(cls: type[BaseModel]) -> dict[str, Any]:
    """The schema defaults as dotted leaves, built once per class (shared: never modify it)."""
    return _leaves(json.loads(cls().model_dump_json()))


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections flattened to dotted leaves; dict-valued options (kwargs) stay one leaf."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not prefix and isinstance(value, dict):  # a section: model, data, mix, ...
            flat.update(_leaves(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def run_id(cfg: TrainConfig) -> str:
    """Stable id of a run: ``<method>-<12 hex of sha256(version, non-default fields)>``.

    Example:
        >>> run_id(TrainConfig()) == run_id(load_config(None, ["optim.lr=0.001"]))  # a default spelled out
        True
    """
    blob = json.dumps({"id_version": ID_VERSION, "fields": cfg.identity()}, sort_keys=True, separators=(",", ":"))
    return f"{cfg.mix.method}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


_JSON_START = frozenset('-0123456789tfnN"')
_MISSING = object()


def _parse_value(text: str) -> Any:
    """An override's value, read as YAML (JSON, as sweeps write it, is read by a faster path
    with the same result)."""
    value: Any = _MISSING
    if text[:1] in _JSON_START and not (text[:1] == '"' and "\\" in text):
        try:
            value = json.loads(text)
        except ValueError:
            value = _MISSING
        if isinstance(value, (dict, list)):  # containers go through YAML (it reads 1e-5 in a list as text)
            value = _MISSING
    if value is _MISSING:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict copy."""
    data = json.loads(json.dumps(base, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):  # shorthand such as data=builtin, then data.img_size=...
                child = DataConfig._shorthand(child) if part == "data" else TeacherConfig._shorthand(child)
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = _parse_value(raw)
    return data


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = TrainConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _describe_keys(model: type[BaseModel]) -> str:
    parts = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "{...}" if isinstance(default, BaseModel) else repr(default)
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


def format_validation_error(err: ValidationError, *, prefix: str = "") -> str:
    """Readable, dotted-field messages for a pydantic error; unknown keys list the valid ones."""
    lines = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tuple["))))
        dotted = ".".join(str(p) for p in loc) or "(config)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            valid = f"; valid keys: {_describe_keys(parent)}" if parent else ""
            msg = f"unknown key{valid}"
        elif item["type"] in ("int_parsing", "float_parsing", "bool_parsing", "int_type", "float_type"):
            msg = f"{msg} (got {item.get('input')!r})"
        if not loc or msg.startswith(f"{dotted}.") or msg.startswith(f"{dotted}:"):
            lines.append(f"{prefix}{msg}")
        else:
            lines.append(f"{prefix}{dotted}: {msg}")
    return "\n".join(lines)


def validate_config(data: dict[str, Any], *, prefix: str = "") -> TrainConfig:
    """Validate a nested dict into a :class:`TrainConfig` or raise :class:`ConfigError`."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix=prefix)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader); a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a run config from an optional YAML file plus ``key.sub=value`` overrides.

    Example:
        >>> cfg = load_config(None, ["mix.method=cutmix", "schedule.epochs=2"])
        >>> cfg.mix.method, cfg.schedule.epochs
        ('cutmix', 2)
    """
    base = read_yaml(Path(path)) if path is not None else {}
    return validate_config(apply_overrides(base, list(overrides or [])))
