"""How long a sweep will take: device-hours and wall clock from what each run computes.

A run's time is modelled as ``setup + trained / r_train + evaluated / r_eval``:

- ``trained``: training images over all epochs (cooldown included); ``evaluated``: validation
  images over all evaluation passes (every ``eval.every`` epochs and the last, twice with EMA,
  plus one pass per occlusion fraction at the end; ``eval.subset`` images only before the last);
- ``r_train``: training images/s. An online teacher adds its forward pass on every batch
  (``1 / r = 1 / r_student + 1 / (FORWARD_SPEEDUP x r_teacher)``); a maps build is that forward
  over the training set once;
- ``r_eval`` and ``setup`` (imports, data, model and teacher build, checkpoint writes are folded in).

Where the numbers come from, in this order:

1. finished runs under the sweep's output root on the same kind of device (GPU runs for a GPU
   sweep): ``r_train`` is the median ``images_per_s`` of the runs of the same model, image size
   and online teacher; ``r_eval`` and ``setup`` are fitted to those runs' ``wall_seconds +
   setup_seconds - train_seconds`` against their evaluated images (least squares when they
   evaluated different amounts, else ``r_eval = EVAL_SPEEDUP x r_train``);
2. :data:`THROUGHPUT`, training images/s per GPU at 224 px with mixed precision, from timm's
   published benchmark ``results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv`` (one RTX
   3090, PyTorch 1.12, AMP, NCHW; ``train_samples_per_sec``). An A100 trains these models
   about 2x faster and an H100 about 3x, so the estimate is an upper bound on such clusters;
   other image sizes scale by pixel count. The CPU entries are the suite's own micro models,
   measured as ``make demo`` runs them (the 2-core VM, two runs at a time, one thread each);
   with them :data:`SETUP_SECONDS` (BENCHMARKS.md, "Cost estimates");
3. nothing: the run shows ``?`` and the total says how many runs it leaves out.

A run on several GPUs (``nodes x gpus_per_node``, one process per GPU) is billed for all of them:
a table rate is per GPU and assumed to scale linearly with the GPUs of a run, a measured rate is
the whole run's (its ``images_per_s``). So the GPU-hours of a sweep do not depend on its node
count; its wall clock does. For a GPU sweep the estimate also gives the wall clock of one run and
of the whole sweep: the waves (runs trained first, maps builds, the sweep's runs) one after the
other, each ``resources.array_parallelism`` runs at a time, as if the cluster granted them at once.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from suite.run.records import iter_runs
from sweeps.runs import Plan, PlannedRun

__all__ = ["THROUGHPUT", "Estimate", "Throughput", "Work", "estimate", "run_work", "train_images"]

IMAGENET_TRAIN = 1_281_167
IMAGENET_VAL = 50_000


@dataclass(frozen=True)
class Throughput:
    """Training images per second of one device, and where the number comes from."""

    images_per_s: float
    device: str  # "gpu" or "cpu"
    img_size: int
    source: str


_TIMM = "timm benchmark, RTX 3090 AMP"
_HERE = "measured by the suite, 1 CPU thread, 2 runs at a time"
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
    "vit_micro_patch4_32": Throughput(380.0, "cpu", 32, _HERE),  # batched augmentation (BENCHMARKS)
    "cnn_micro": Throughput(700.0, "cpu", 32, _HERE),  # the demo teacher: alone, both cores
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

FORWARD_SPEEDUP = 3.0  # a forward pass without gradients costs about a third of a training step
# Validation images per second over training images per second (forward only, larger batches),
# and seconds from a run's process start to its first step, when no finished run says otherwise.
EVAL_SPEEDUP = {"gpu": 3.0, "cpu": 3.0}
SETUP_SECONDS = {"gpu": 60.0, "cpu": 11.0}


@dataclass(frozen=True)
class Work:
    """What one run computes: images trained and evaluated over the whole run, and its online teacher."""

    trained: int
    evaluated: int
    teacher: str | None = None  # an online teacher's checkpoint (a forward pass per batch)


def _evaluated_images(epochs: int, every: int, ema: bool, occlusions: int, val: int, subset: int | None) -> int:
    """Validation images over a run: every ``every`` epochs and the last, twice with EMA, plus one
    pass per occlusion fraction at the end; ``eval.subset`` evaluates only its first images before
    the last epoch."""
    evaluations = len({e for e in range(1, epochs + 1) if e % every == 0} | ({epochs} if epochs else set()))
    curve = min(subset, val) if subset else val
    last = 1 if epochs else 0
    return ((evaluations - last) * curve + last * val) * (2 if ema else 1) + occlusions * val


def _online_teacher(checkpoint: object, maps: object) -> str | None:
    """The key of a teacher that runs on every batch (a checkpoint, no offline maps), else None."""
    return str(checkpoint) if checkpoint and maps is None else None


def run_work(run: PlannedRun) -> Work:
    """The images ``run`` trains and evaluates from start to end, and its online teacher."""
    cfg = run.config
    train, val = train_images(run)
    epochs = cfg.schedule.total_epochs
    evaluated = _evaluated_images(
        epochs, cfg.eval.every, bool(cfg.optim.ema_decay), len(cfg.eval.occlusion), val, cfg.eval.subset
    )
    return Work(epochs * train, evaluated, _online_teacher(cfg.teacher.checkpoint, cfg.teacher.maps))


@dataclass
class _Rates:
    """A model's measured rates on one kind of device (from finished runs)."""

    train: dict[str | None, float]  # online teacher (None: without) -> median images/s
    points: list[tuple[float, float]]  # (images evaluated, seconds outside the training epochs)

    def fit(self, default_train: float, device: str) -> tuple[float, float]:
        """(eval images/s, setup seconds) fitted to the finished runs' seconds outside training."""
        eval_rate = EVAL_SPEEDUP[device] * default_train
        if len({x for x, _ in self.points}) >= 2:
            xs, ys = [x for x, _ in self.points], [y for _, y in self.points]
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            if slope > 0:
                return 1.0 / slope, max(0.0, my - slope * mx)
        if not self.points:
            return eval_rate, SETUP_SECONDS[device]
        return eval_rate, max(0.0, statistics.median(y - x / eval_rate for x, y in self.points))


def _measured(output_root: Path, device: str) -> dict[tuple[str, int], _Rates]:
    """Rates per (model, img_size) from the finished runs on ``device`` under ``output_root``."""
    train: dict[tuple[str, int], dict[str | None, list[float]]] = {}
    points: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for record in iter_runs(output_root):
        summary, config = record.summary, record.config
        if not summary or not config or not summary.get("images_per_s") or summary.get("status") != "finished":
            continue
        ran_on = "cpu" if str(summary.get("device", "cpu")).startswith("cpu") else "gpu"
        if ran_on != device:
            continue
        key = (config["model"]["name"], int(config["data"]["img_size"]))
        teacher = config.get("teacher") or {}
        online = _online_teacher(teacher.get("checkpoint"), teacher.get("maps"))
        train.setdefault(key, {}).setdefault(online, []).append(float(summary["images_per_s"]))
        if summary.get("setup_seconds") is not None and summary.get("train_seconds") is not None:
            evaluated = _evaluated(config, int(summary.get("epochs") or 0), int(summary.get("val_images") or 0))
            rest = float(summary["wall_seconds"]) + float(summary["setup_seconds"]) - float(summary["train_seconds"])
            points.setdefault(key, []).append((evaluated, rest))
    return {
        key: _Rates({t: statistics.median(v) for t, v in by_teacher.items()}, points.get(key, []))
        for key, by_teacher in train.items()
    }


def _evaluated(config: dict, epochs: int, val: int) -> float:
    """Images a finished run evaluated (as :func:`run_work` counts them), from its config.json."""
    evals, optim = config.get("eval") or {}, config.get("optim") or {}
    return float(_evaluated_images(epochs, int(evals.get("every") or 1), bool(optim.get("ema_decay")),
                                   len(evals.get("occlusion") or []), val, evals.get("subset")))


def _table_rate(name: str, size: int, device: str, gpus: int) -> float | None:
    entry = THROUGHPUT.get(name)
    if entry is None or entry.device != device:
        return None
    return entry.images_per_s * (entry.img_size / size) ** 2 * max(1, gpus)


def _with_teacher(student: float, teacher: float | None) -> float | None:
    """Training images/s when an online teacher's forward runs on every batch."""
    if teacher is None:
        return None
    return 1.0 / (1.0 / student + 1.0 / (FORWARD_SPEEDUP * teacher))


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
        seconds = _seconds(plan, run, measured, device, gpus, sources)
        if seconds is None:
            hours[run.run_id] = None
            unknown += 1
            continue
        hours[run.run_id] = seconds / 3600 * max(1, gpus)
        # a maps build is one process on one GPU: its table rate times the run's GPUs cancels out
        wall[run.run_id] = hours[run.run_id] if run.kind == "maps" else seconds / 3600
    total = sum(h for h in hours.values() if h is not None)
    est = Estimate(hours, total, device.upper(), sources, unknown, wall)
    if device == "gpu":
        est.wall_hours, est.sweep_wall_hours = _wall_clock(plan, wall)
    return est


def _seconds(
    plan: Plan, run: PlannedRun, measured: dict[tuple[str, int], _Rates], device: str, gpus: int,
    sources: dict[str, str],
) -> float | None:
    """Wall seconds of one run (its GPUs together), or None without a rate for its model."""

    def rate_of(name: str, size: int, teacher: str | None = None, teacher_model: str = "?") -> float | None:
        rates = measured.get((name, size))
        if rates is not None and teacher in rates.train:
            sources[name] = f"measured in finished runs ({rates.train[teacher]:,.0f} img/s)"
            return rates.train[teacher]
        base = rates.train.get(None) if rates is not None else None
        if base is not None:
            sources[name] = f"measured in finished runs ({base:,.0f} img/s)"
        else:
            base = _table_rate(name, size, device, gpus)
            if base is None:
                return None
            entry = THROUGHPUT[name]
            sources[name] = f"{entry.source} ({entry.images_per_s:,.0f} img/s at {entry.img_size} px)"
        if teacher is None:
            return base
        return _with_teacher(base, rate_of(teacher_model, size))

    name, size = run.config.model.name, run.config.data.img_size
    if run.kind == "maps":  # one teacher forward pass over the training set
        name = run.config.teacher.model or _teacher_model(plan, run)
        size = int((run.build or {}).get("img_size") or size)
        rate = rate_of(name, size)
        if rate is None:
            return None
        # a build evaluates nothing and writes no checkpoints: the default setup, not a training run's fit
        return SETUP_SECONDS[device] + train_images(run)[0] / (FORWARD_SPEEDUP * rate)
    work = run_work(run)
    rate = rate_of(name, size, work.teacher, run.config.teacher.model or _teacher_model(plan, run))
    if rate is None:
        return None
    student = rate_of(name, size) or rate
    rates = measured.get((name, size), _Rates({}, []))
    eval_rate, setup = rates.fit(student, device)
    return setup + work.trained / rate + work.evaluated / eval_rate


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



def _teacher_model(plan: Plan, step: PlannedRun) -> str:
    """The model of the run a maps step's teacher is (a prerequisite trained first), else ``?``."""
    for run in plan.prerequisites:
        if run.run_id in step.needs:
            return run.config.model.name
    return "?"
