"""How long a sweep will take: GPU-hours from epochs x images / throughput.

Throughput comes, in this order, from

1. the measured ``images_per_s`` in the summaries of finished runs of the same model and image
   size under the sweep's output root, on the same kind of device (GPU runs for a GPU sweep);
2. :data:`THROUGHPUT`, training images/s per GPU at 224 px with mixed precision, from timm's
   published benchmark ``results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv`` (one RTX
   3090, PyTorch 1.12, AMP, NCHW; ``train_samples_per_sec``). An A100 trains these models
   about 2x faster and an H100 about 3x, so the estimate is an upper bound on such clusters;
   other image sizes scale by pixel count. The two CPU entries are the suite's own micro
   models, measured with ``suite train`` on one core of the 2-core CI machine (Xeon,
   ``run.threads=1``, batch 64, 32 px, other jobs sharing the machine);
3. nothing: the run shows ``?`` and the total says how many runs it leaves out.

Each epoch reads the training set once and the validation set once (counted at a third of a
training image: forward only). A run on several GPUs (``nodes x gpus_per_node``, one process per
GPU) is billed for all of them: a table rate is per GPU and assumed to scale linearly with the
GPUs of a run, a measured rate is the whole run's (its ``images_per_s``). So the GPU-hours of a
sweep do not depend on its node count; its wall clock does. For a GPU sweep the estimate also
gives the wall clock of one run and of the whole sweep: the waves (runs trained first, maps
builds, the sweep's runs) one after the other, each ``resources.array_parallelism`` runs at a
time, as if the cluster granted them at once.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from suite.run.records import iter_runs
from sweeps.runs import Plan, PlannedRun

__all__ = ["THROUGHPUT", "Estimate", "Throughput", "estimate", "train_images"]

IMAGENET_TRAIN = 1_281_167
IMAGENET_VAL = 50_000
EVAL_COST = 1 / 3  # a validation image costs about a third of a training image (no backward)


@dataclass(frozen=True)
class Throughput:
    """Training images per second of one device, and where the number comes from."""

    images_per_s: float
    device: str  # "gpu" or "cpu"
    img_size: int
    source: str


_TIMM = "timm benchmark, RTX 3090 AMP"
_HERE = "measured by the suite, 1 CPU thread"
THROUGHPUT: dict[str, Throughput] = {
    "deit_tiny_patch16_224": Throughput(2290.5, "gpu", 224, _TIMM),
    "deit_small_patch16_224": Throughput(1053.6, "gpu", 224, _TIMM),
    "deit_base_patch16_224": Throughput(390.9, "gpu", 224, _TIMM),
    "vit_tiny_patch16_224": Throughput(2293.5, "gpu", 224, _TIMM),
    "vit_small_patch16_224": Throughput(1052.9, "gpu", 224, _TIMM),
    "vit_base_patch16_224": Throughput(390.9, "gpu", 224, _TIMM),
    "resnet18": Throughput(2764.2, "gpu", 224, _TIMM),
    "resnet50": Throughput(826.1, "gpu", 224, _TIMM),
    "resnet101": Throughput(569.0, "gpu", 224, _TIMM),
    "vit_micro_patch4_32": Throughput(500.0, "cpu", 32, _HERE),
    "cnn_micro": Throughput(600.0, "cpu", 32, _HERE),
}


@dataclass
class Estimate:
    """Hours per run and in total; ``device`` is what the hours are of ("GPU" or "CPU")."""

    hours: dict[str, float | None]
    total_hours: float
    device: str
    sources: dict[str, str] = field(default_factory=dict)  # model -> where its throughput came from
    unknown: int = 0
    wall: dict[str, float | None] = field(default_factory=dict)  # run id -> wall-clock hours left
    wall_hours: float | None = None  # GPU sweeps: the longest run's wall clock left (its GPUs together)
    sweep_wall_hours: float | None = None  # GPU sweeps: the waves one after another, array_parallelism at a time


def train_images(run: PlannedRun) -> tuple[int, int]:
    """(train, val) images one epoch of ``run`` reads; ImageNet-1k sizes for an uncounted folder."""
    data = run.config.data
    if data.source == "builtin":
        return int(data.train_size or 0), int(data.val_size or 0)
    root = Path(data.root) if data.root is not None else None
    counted = [_count(root / split) if root is not None else None for split in ("train", "val")]
    train = counted[0] if counted[0] is not None else IMAGENET_TRAIN
    val = counted[1] if counted[1] is not None else IMAGENET_VAL
    if data.train_size:
        train = min(train, data.train_size)
    if data.val_size:
        val = min(val, data.val_size)
    return train, val


_COUNTS: dict[Path, int | None] = {}


def _count(folder: Path) -> int | None:
    """Files in ``folder/<class>/``; None for a missing or very large tree (assume ImageNet)."""
    if folder not in _COUNTS:
        total = 0
        try:
            for entry in folder.iterdir():
                if entry.is_dir():
                    total += sum(1 for _ in entry.iterdir())
                if total > 200_000:
                    total = -1
                    break
        except OSError:
            total = -1
        _COUNTS[folder] = None if total < 0 else total
    return _COUNTS[folder]


def _measured(output_root: Path, device: str) -> dict[tuple[str, int], float]:
    """Median measured images/s per (model, img_size) over finished runs on ``device``."""
    samples: dict[tuple[str, int], list[float]] = {}
    for record in iter_runs(output_root):
        summary, config = record.summary, record.config
        if not summary or not config or not summary.get("images_per_s"):
            continue
        ran_on = "cpu" if str(summary.get("device", "cpu")).startswith("cpu") else "gpu"
        if ran_on != device:
            continue
        key = (config["model"]["name"], int(config["data"]["img_size"]))
        samples.setdefault(key, []).append(float(summary["images_per_s"]))
    return {key: statistics.median(values) for key, values in samples.items()}


def estimate(plan: Plan) -> Estimate:
    """Estimate device-hours for every run of ``plan`` (finished runs count as 0).

    Example:
        >>> est = estimate(expand(load_sweep("sweeps/paper/methods.yaml"), check_paths=False))  # doctest: +SKIP
        >>> round(est.total_hours)  # doctest: +SKIP
        1909
    """
    gpus = plan.sweep.spec.resources.gpus
    device = "gpu" if gpus > 0 else "cpu"
    measured = _measured(plan.sweep.output_root, device)
    hours: dict[str, float | None] = {}
    wall: dict[str, float | None] = {}
    sources: dict[str, str] = {}
    unknown = 0
    for run in plan.all_runs():
        wall[run.run_id] = None
        if run.state().is_finished():
            hours[run.run_id] = wall[run.run_id] = 0.0
            continue
        name, size = run.config.model.name, run.config.data.img_size
        if run.kind == "maps":  # one teacher forward pass over the training set
            name = run.config.teacher.model or _teacher_model(plan, run)
            size = int((run.build or {}).get("img_size") or size)
        rate: float | None = None
        if (name, size) in measured:
            rate = measured[(name, size)]
            sources[name] = f"measured in finished runs ({rate:,.0f} img/s)"
        elif name in THROUGHPUT and THROUGHPUT[name].device == device:
            entry = THROUGHPUT[name]
            rate = entry.images_per_s * (entry.img_size / size) ** 2 * max(1, gpus)
            sources[name] = f"{entry.source} ({entry.images_per_s:,.0f} img/s at {entry.img_size} px)"
        if rate is None:
            hours[run.run_id] = None
            unknown += 1
            continue
        train, val = train_images(run)
        if run.kind == "maps":
            seconds = train / (FORWARD_SPEEDUP * rate)
        else:
            seconds = run.config.schedule.total_epochs * (train + EVAL_COST * val) / rate  # with cooldown
        hours[run.run_id] = seconds / 3600 * max(1, gpus)
        # a maps build is one process on one GPU: its table rate times the run's GPUs cancels out
        wall[run.run_id] = hours[run.run_id] if run.kind == "maps" else seconds / 3600
    total = sum(h for h in hours.values() if h is not None)
    est = Estimate(hours, total, device.upper(), sources, unknown, wall)
    if device == "gpu":
        est.wall_hours, est.sweep_wall_hours = _wall_clock(plan, wall)
    return est


def _wall_clock(plan: Plan, wall: dict[str, float | None]) -> tuple[float | None, float | None]:
    """(the longest run's wall clock, the sweep's): waves in turn, ``array_parallelism`` runs at a time."""
    parallel = plan.sweep.spec.resources.array_parallelism
    waves = [
        [run for run in plan.prerequisites if run.kind != "maps"],
        [run for run in plan.prerequisites if run.kind == "maps"],
        plan.runs,
    ]
    total = 0.0
    for wave in waves:
        left = [h for run in wave if (h := wall[run.run_id])]
        if left:
            total += math.ceil(len(left) / parallel) * max(left)
    runs = [h for run in plan.runs if (h := wall[run.run_id]) is not None]
    if not runs:
        return None, None
    return max(runs), total


FORWARD_SPEEDUP = 3.0  # a forward pass without gradients costs about a third of a training step


def _teacher_model(plan: Plan, step: PlannedRun) -> str:
    """The model of the run a maps step's teacher is (a prerequisite trained first), else ``?``."""
    for run in plan.prerequisites:
        if run.run_id in step.needs:
            return run.config.model.name
    return "?"
