"""The training core: one function, :func:`train`, used by the CLI, sweeps and tuning.

The loop is DeiT's recipe scaled by config (AdamW, warmup + cosine per step, label
smoothing, soft-target CE or BCE, optional clipping and EMA, DeiT's mixing switch), with
bf16 autocast and channels_last on CUDA.

Exact resume. Every random draw of step ``s`` of epoch ``e`` is seeded from
``(seed, e, s)``: the data order and augmentation (``suite.data``), dropout/drop-path
(global generators re-seeded per step) and the mixing draws. A checkpoint written at a
step boundary therefore resumes into the same trajectory as an uninterrupted run: on CPU
the final metrics are bit-identical.

Stops. SIGTERM/SIGUSR1/SIGINT (and any signal the caller adds) end the loop at the next
step boundary with a checkpoint: :func:`train` then returns status ``interrupted``. A
finished run (``summary.json`` present) is never retrained: :func:`train` returns its
summary at once.

Data parallelism. Model building, the sampler (rank/world size) and the metric
reductions are separate steps, so wrapping the model in DDP and sharding the sampler is
all a multi-GPU launcher has to add.
"""

from __future__ import annotations

import io
import json
import logging
import math
import platform
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from suite.config import TrainConfig, run_id
from suite.data import DataBundle, build_data, derive_seed, eval_loader, seed_everything, steps_per_epoch, train_loader
from suite.evaluate import evaluate, evaluate_occlusion
from suite.hardware import configure_threads, resolve_device
from suite.mixing import build_mixer
from suite.models import build_model
from suite.records import RunPaths, atomic_write_bytes, atomic_write_json, atomic_write_jsonl, read_json
from suite.signals import GracefulStop
from suite.tracking import Tracker
from suite.weights import read_weights

__all__ = ["TrainResult", "train", "load_teacher"]

STATUS_FINISHED = "finished"
STATUS_INTERRUPTED = "interrupted"


@dataclass
class TrainResult:
    """What :func:`train` returns: the run's id, directory, status and summary."""

    run_id: str
    run_dir: Path
    status: str
    summary: dict[str, Any] = field(default_factory=dict)


def _logger(paths: RunPaths) -> logging.Logger:
    log = logging.getLogger(f"suite.run.{paths.root.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)
    file_handler = logging.FileHandler(paths.log)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(file_handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    log.addHandler(stream)
    return log


def load_teacher(cfg: TrainConfig, *, num_classes: int, device: torch.device) -> Any:
    """Build the configured teacher from its checkpoint file (no hub access)."""
    from suite.cam import Teacher

    state, saved_config = read_weights(cfg.teacher.checkpoint)
    name = cfg.teacher.model
    overrides: dict[str, Any] = dict(cfg.teacher.kwargs)
    img_size = cfg.data.img_size
    if saved_config is not None:
        saved_model = saved_config.get("model", {})
        name = name or saved_model.get("name")
        for key in ("patch_size", "embed_dim", "depth", "num_heads"):
            if saved_model.get(key) is not None:
                overrides.setdefault(key, saved_model[key])
        overrides.update({k: v for k, v in saved_model.get("kwargs", {}).items() if k not in overrides})
        img_size = saved_config.get("data", {}).get("img_size", img_size)
    if name is None:
        raise ValueError(
            f"teacher.model: {cfg.teacher.checkpoint} is not a suite checkpoint, so the teacher's timm name is needed"
        )
    model = build_model(name, num_classes=num_classes, img_size=img_size, overrides=overrides)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"teacher.checkpoint: {cfg.teacher.checkpoint} does not fit {name} with {num_classes} classes "
            f"(missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]})"
        )
    return Teacher.from_module(model.to(device))


def _teacher(cfg: TrainConfig, data: DataBundle, device: torch.device) -> Any:
    """The online teacher, the offline maps, or None (area targets)."""
    if cfg.teacher.maps is not None:
        from suite.offline_maps import OfflineMaps, training_set_fingerprint

        return OfflineMaps.open(
            cfg.teacher.maps, fingerprint=training_set_fingerprint(cfg.data, data.train), num_classes=data.num_classes
        )
    if cfg.teacher.enabled:
        return load_teacher(cfg, num_classes=data.num_classes, device=device)
    return None


def _rng_state() -> dict[str, Any]:
    """RNG states in types that ``torch.load(weights_only=True)`` accepts (no numpy arrays)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _EpochMeter:
    """Running sums of one epoch; saved in checkpoints so a resumed epoch reports the same."""

    def __init__(self, state: dict[str, float] | None = None) -> None:
        self.state = dict(state or {"loss_sum": 0.0, "images": 0, "steps": 0, "seconds": 0.0, "fallbacks": 0})

    def add(self, loss: float, images: int, seconds: float, fallbacks: int) -> None:
        s = self.state
        s["loss_sum"] += loss * images
        s["images"] += images
        s["steps"] += 1
        s["seconds"] += seconds
        s["fallbacks"] += fallbacks


def _save_checkpoint(paths: RunPaths, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(paths.checkpoint, buffer.getvalue())


def _loss_fn(kind: str) -> Any:
    if kind == "soft_ce":
        return lambda logits, target: torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    if kind == "bce":
        return lambda logits, target: F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"optim.loss must be one of soft_ce, bce, but got {kind!r}")


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if cfg.optim.name == "sgd":
        kwargs["momentum"] = cfg.optim.momentum
    return create_optimizer_v2(model, cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, **kwargs)


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps: int) -> Any:
    from timm.scheduler import CosineLRScheduler

    total = cfg.schedule.epochs * steps
    warmup = int(round(cfg.schedule.warmup_epochs * steps))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=cfg.schedule.min_lr,
        warmup_t=warmup,
        warmup_lr_init=cfg.schedule.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def _failure(paths: RunPaths, err: BaseException) -> None:
    atomic_write_json(
        paths.failure,
        {
            "error": type(err).__name__,
            "message": str(err),
            "traceback": traceback.format_exc()[-4000:],
            "time": time.time(),
        },
    )


def train(cfg: TrainConfig, *, stop: GracefulStop | None = None, progress: bool | None = None) -> TrainResult:
    """Train (or resume, or return) the run described by ``cfg``.

    Args:
        cfg: the validated run config.
        stop: an external stop flag (jobs pass one that also reacts to SLURM's USR2);
            by default SIGTERM/SIGUSR1/SIGINT stop the loop at the next step boundary.
        progress: show a per-epoch progress bar (default: when stderr is a terminal).

    Returns:
        A :class:`TrainResult`; ``status`` is ``finished`` or ``interrupted``.
    """
    rid = run_id(cfg)
    paths = RunPaths.of(cfg.run.output_root, rid)
    summary = read_json(paths.summary)
    if summary is not None:
        return TrainResult(rid, paths.root, summary.get("status", STATUS_FINISHED), summary)
    paths.root.mkdir(parents=True, exist_ok=True)
    resolved = json.loads(cfg.model_dump_json())
    if not paths.config.exists():
        atomic_write_json(paths.config, {**resolved, "run_id": rid})
    log = _logger(paths)
    own_stop = stop is None
    stop = stop or GracefulStop()
    try:
        if own_stop:
            with stop:
                return _train(cfg, rid, paths, resolved, log, stop, progress)
        return _train(cfg, rid, paths, resolved, log, stop, progress)
    except Exception as err:
        _failure(paths, err)
        log.error("run failed: %s: %s (see %s)", type(err).__name__, err, paths.failure)
        raise
    finally:
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)


def _train(
    cfg: TrainConfig,
    rid: str,
    paths: RunPaths,
    resolved: dict[str, Any],
    log: logging.Logger,
    stop: GracefulStop,
    progress: bool | None,
) -> TrainResult:
    device = resolve_device(cfg.run.device)
    threads = configure_threads(cfg.run.threads)
    cuda = device.type == "cuda"
    amp = cfg.run.amp and cuda
    channels_last = cfg.run.channels_last and cuda
    seed = cfg.run.seed
    seed_everything(derive_seed(seed, "init"))

    data: DataBundle = build_data(cfg.data, geometry=cfg.teacher.maps is not None)
    steps = steps_per_epoch(data, cfg.data)
    model = build_model(
        cfg.model.name,
        num_classes=data.num_classes,
        img_size=cfg.data.img_size,
        overrides={
            "patch_size": cfg.model.patch_size,
            "embed_dim": cfg.model.embed_dim,
            "depth": cfg.model.depth,
            "num_heads": cfg.model.num_heads,
            "drop_path_rate": cfg.model.drop_path or None,
            **cfg.model.kwargs,
        },
        checkpoint=cfg.model.checkpoint,
    ).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model)
    scheduler = _scheduler(cfg, optimizer, steps)
    ema = None
    if cfg.optim.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.optim.ema_decay)
    teacher = _teacher(cfg, data, device)
    mixer = build_mixer(cfg.mix, num_classes=data.num_classes, teacher=teacher)
    loss_fn = _loss_fn(cfg.optim.loss)
    val_loader = eval_loader(data.val, cfg.data, cfg.eval.batch_size, pin=cuda)

    start_epoch, start_step, history, meter_state = 0, 0, [], None
    best: dict[str, Any] = {"top1": -1.0, "top5": 0.0, "epoch": -1}
    spent_seconds = 0.0
    if paths.checkpoint.is_file():
        ckpt = torch.load(paths.checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("model_ema") is not None:
            ema.module.load_state_dict(ckpt["model_ema"])
        start_epoch, start_step = ckpt["epoch"], ckpt["step"]
        history, meter_state, best = ckpt["history"], ckpt["meter"], ckpt["best"]
        spent_seconds = ckpt.get("seconds", 0.0)
        _set_rng_state(ckpt["rng"])
        log.info("resuming %s at epoch %d step %d/%d", rid, start_epoch, start_step, steps)
    else:
        log.info("starting %s: %s on %s (%d threads), %d steps/epoch", rid, cfg.model.name, device, threads, steps)
    atomic_write_jsonl(paths.metrics, history)  # drop epochs past the checkpoint, if any

    tracker = Tracker(cfg.tracking, run_id=rid, run_dir=paths.root, config=resolved, name=cfg.name or rid)
    exit_code = 1
    try:
        result = _loop(
            cfg, rid, paths, log, stop, progress, locals_=dict(
                device=device, amp=amp, channels_last=channels_last, data=data, steps=steps, model=model,
                optimizer=optimizer, scheduler=scheduler, ema=ema, mixer=mixer, loss_fn=loss_fn,
                val_loader=val_loader, start_epoch=start_epoch, start_step=start_step, history=history,
                meter_state=meter_state, best=best, spent_seconds=spent_seconds, tracker=tracker,
                threads=threads, resolved=resolved,
            )
        )
        exit_code = 0
        return result
    finally:
        tracker.finish(exit_code=exit_code)


def _checkpoint_payload(ctx: dict[str, Any], epoch: int, step: int, meter: _EpochMeter, seconds: float) -> dict:
    return {
        "model": ctx["model"].state_dict(),
        "optimizer": ctx["optimizer"].state_dict(),
        "model_ema": None if ctx["ema"] is None else ctx["ema"].module.state_dict(),
        "scaler": None,  # bf16 autocast needs no loss scaling
        "epoch": epoch,
        "step": step,
        "history": ctx["history"],
        "meter": meter.state,
        "best": ctx["best"],
        "seconds": seconds,
        "rng": _rng_state(),
        "config": ctx["resolved"],
    }


def _loop(
    cfg: TrainConfig,
    rid: str,
    paths: RunPaths,
    log: logging.Logger,
    stop: GracefulStop,
    progress: bool | None,
    locals_: dict[str, Any],
) -> TrainResult:
    ctx = locals_
    device, model, optimizer, scheduler = ctx["device"], ctx["model"], ctx["optimizer"], ctx["scheduler"]
    steps, history, tracker = ctx["steps"], ctx["history"], ctx["tracker"]
    ema, mixer, loss_fn = ctx["ema"], ctx["mixer"], ctx["loss_fn"]
    amp, channels_last, data = ctx["amp"], ctx["channels_last"], ctx["data"]
    seed, epochs = cfg.run.seed, cfg.schedule.epochs
    show = sys.stderr.isatty() if progress is None else progress
    seconds_before = ctx["spent_seconds"]
    session_start = time.perf_counter()

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - session_start

    from tqdm import tqdm

    model.train()
    for epoch in range(ctx["start_epoch"], epochs):
        first_step = ctx["start_step"] if epoch == ctx["start_epoch"] else 0
        meter = _EpochMeter(ctx["meter_state"] if epoch == ctx["start_epoch"] else None)
        loader = train_loader(data, cfg.data, seed=seed, epoch=epoch, start_step=first_step, pin=device.type == "cuda")
        bar = tqdm(total=steps, initial=first_step, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        step = first_step
        for batch in loader:
            x, y, geometry = batch[0], batch[1], (batch[2] if len(batch) > 2 else None)
            tick = time.perf_counter()
            step_seed = derive_seed(seed, "step", epoch, step)
            seed_everything(step_seed)
            gen = torch.Generator().manual_seed(step_seed)
            global_step = epoch * steps + step
            scheduler.step_update(global_step)
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            x, target, stats = mixer(x, y, generator=gen, geometry=geometry)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            loss = loss_fn(logits.float(), target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
            optimizer.step()
            if ema is not None:
                ema.update(model, step=global_step)
            fallbacks = stats.get("fallbacks", 0)
            meter.add(loss.item(), y.numel(), time.perf_counter() - tick, int(fallbacks))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{meter.state['loss_sum'] / meter.state['images']:.3f}")
            if stop.requested and step < steps:
                _save_checkpoint(paths, _checkpoint_payload(ctx, epoch, step, meter, elapsed()))
                bar.close()
                log.info("signal %s: checkpoint at epoch %d step %d; rerun to resume", stop.signum, epoch, step)
                return TrainResult(rid, paths.root, STATUS_INTERRUPTED, {"epoch": epoch, "step": step})
        bar.close()
        row = _end_of_epoch(cfg, ctx, epoch, meter, scheduler, optimizer)
        history.append(row)
        atomic_write_jsonl(paths.metrics, history)
        tracker.log(row, step=epoch + 1)
        ctx["start_step"], ctx["meter_state"] = 0, None
        _save_checkpoint(paths, _checkpoint_payload(ctx, epoch + 1, 0, _EpochMeter(), elapsed()))
        log.info(
            "epoch %d/%d  loss %.4f  top1 %s  lr %.2e  %.0f img/s",
            epoch + 1, epochs, row["train_loss"], f"{row['top1']:.2f}" if "top1" in row else "-", row["lr"],
            row["images_per_s"],
        )
        if stop.requested and epoch + 1 < epochs:
            log.info("signal %s: checkpoint at end of epoch %d; rerun to resume", stop.signum, epoch + 1)
            return TrainResult(rid, paths.root, STATUS_INTERRUPTED, {"epoch": epoch + 1, "step": 0})

    summary = _final_summary(cfg, ctx, rid, elapsed())
    tracker.summarize(summary)
    atomic_write_json(paths.summary, summary)
    paths.failure.unlink(missing_ok=True)
    log.info("finished %s: top1 %.2f (best %.2f)", rid, summary["top1"], summary["best_top1"])
    return TrainResult(rid, paths.root, STATUS_FINISHED, summary)


def _end_of_epoch(
    cfg: TrainConfig, ctx: dict[str, Any], epoch: int, meter: _EpochMeter, scheduler: Any, optimizer: Any
) -> dict[str, Any]:
    s = meter.state
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": s["loss_sum"] / max(1, s["images"]),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": s["images"] / max(1e-9, s["seconds"]),
        "epoch_seconds": s["seconds"],
        "tokenmix_fallbacks": s["fallbacks"],
    }
    last = epoch + 1 == cfg.schedule.epochs
    if last or (epoch + 1) % cfg.eval.every == 0:
        kwargs = dict(device=ctx["device"], amp=ctx["amp"], channels_last=ctx["channels_last"])
        metrics = evaluate(ctx["model"], ctx["val_loader"], **kwargs)
        row.update({"top1": metrics["top1"], "top5": metrics["top5"], "val_loss": metrics["loss"]})
        if ctx["ema"] is not None:
            ema_metrics = evaluate(ctx["ema"].module, ctx["val_loader"], **kwargs)
            row.update({"ema_top1": ema_metrics["top1"], "ema_top5": ema_metrics["top5"]})
        best = ctx["best"]
        if metrics["top1"] > best["top1"]:
            best.update({"top1": metrics["top1"], "top5": metrics["top5"], "epoch": epoch + 1})
    row["wall_time"] = time.time()
    return row


def _final_summary(cfg: TrainConfig, ctx: dict[str, Any], rid: str, seconds: float) -> dict[str, Any]:
    history, device, best = ctx["history"], ctx["device"], ctx["best"]
    last = history[-1]
    patch = cfg.eval.occlusion_patch or cfg.model.resolved_patch_size() or max(1, cfg.data.img_size // 8)
    occlusion = {}
    if cfg.eval.occlusion:
        occlusion = evaluate_occlusion(
            ctx["model"], ctx["val_loader"], fractions=list(cfg.eval.occlusion), patch=patch,
            seed=cfg.eval.occlusion_seed, device=device, amp=ctx["amp"], channels_last=ctx["channels_last"],
        )
    images = sum(r["images_per_s"] * r["epoch_seconds"] for r in history)
    train_seconds = sum(r["epoch_seconds"] for r in history)
    gpus = 1 if device.type == "cuda" else 0
    summary = {
        "run_id": rid,
        "status": STATUS_FINISHED,
        "name": cfg.name,
        "epochs": len(history),
        "top1": last["top1"],
        "top5": last["top5"],
        "val_loss": last["val_loss"],
        "best_top1": best["top1"],
        "best_top5": best["top5"],
        "best_epoch": best["epoch"],
        "wall_seconds": seconds,
        "train_seconds": train_seconds,
        "images_per_s": images / max(1e-9, train_seconds),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "threads": ctx["threads"],
        "gpu_hours": gpus * seconds / 3600.0,
        "tokenmix_fallbacks": sum(r.get("tokenmix_fallbacks", 0) for r in history),
        "occlusion_patch": patch if occlusion else None,
        **occlusion,
    }
    if "ema_top1" in last:
        summary.update({"ema_top1": last["ema_top1"], "ema_top5": last["ema_top5"]})
    if any(not math.isfinite(v) for v in summary.values() if isinstance(v, float)):
        raise FloatingPointError(f"non-finite summary values: {summary}")
    return summary

