"""The training core: :class:`Trainer` and its one-call form :func:`train`, used by the CLI,
sweeps and tuning.

The loop is DeiT's recipe scaled by config (AdamW, warmup + cosine per step, label smoothing,
soft-target CE or BCE, optional clipping and EMA, DeiT's mixing switch), with bf16 autocast and
channels_last on CUDA. :meth:`Trainer.fit` reads like the recipe::

    build -> resume -> for each epoch: steps -> end of epoch (evaluate, checkpoint, metrics row,
    callbacks) -> summary

Exact resume. Every random draw of step ``s`` of epoch ``e`` is seeded from ``(seed, e, s)``:
the data order and augmentation (``suite.data.loaders``), dropout/drop-path (global generators
re-seeded per step) and the mixing draws. A checkpoint written at a step boundary therefore
resumes into the same trajectory as an uninterrupted run: on CPU the final metrics are
bit-identical.

No host sync in the step. The loss and TokenMix's fallback count are summed on the device; the
host reads the sums every ``run.log_every`` steps (progress bar, non-finite check) and at the end
of the epoch. A non-finite loss stops the run at most ``log_every`` steps late, before any
checkpoint of the bad weights is written.

Stops. SIGTERM/SIGUSR1/SIGINT (and any signal the caller adds) end the loop at the next step
boundary with a checkpoint: the run is then ``interrupted``. A second Ctrl-C stops at once and
the run is ``interrupted`` at its last checkpoint (``checkpoint.prev.pt`` keeps the one before, the
fallback for a damaged ``checkpoint.pt``). A callback may stop the run after
an epoch with a reason: it ends ``pruned`` and is never resumed. A run that ended (``finished``
or ``pruned``) is never retrained: :func:`train` returns its summary at once.

Writing. Every file and the W&B run pass through one :class:`~suite.run.writer.RunWriter`, the seam
where a data-parallel run lets rank 0 write and silences the other ranks.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from suite.device import distributed
from suite.config import ID_VERSION, ConfigError, TrainConfig, file_sha256, run_id, teacher_identity
from suite.data.loaders import DataBundle, build_data, eval_loader, steps_per_epoch, train_loader
from suite.run.seeds import derive_seed, seed_everything
from suite.train.evaluate import evaluate, evaluate_occlusion
from suite.train.recipe import build_optimizer, build_scheduler, loss_fn
from suite.train.state import DeviceMeter, TrainState, check_finite, empty_meter, rng_state, set_rng_state
from suite.device.hardware import configure_threads, resolve_device, set_cpu_share
from suite.mixing.mixer import build_mixer
from suite.models.factory import build_model
from suite.device.precision import Precision, enable_tf32, resolve_precision
from suite.run.records import CorruptRecordError, RunPaths, RunState, read_json, read_summary, run_lock, run_state
from suite.run.signals import GracefulStop
from suite.teacher.build import build_teacher
from suite.run.writer import RunWriter

__all__ = ["EpochCallback", "TrainResult", "TrainState", "Trainer", "train"]


class EpochCallback(Protocol):
    """Called after each epoch's records are written; a returned string stops the run as ``pruned``.

    Args (of the call):
        epoch: the finished epoch, 1-based.
        metrics: that epoch's ``metrics.jsonl`` row (``top1`` present on evaluated epochs).
    """

    def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> str | None: ...


@dataclass
class TrainResult:
    """What :func:`train` returns: the run's id, directory, state and summary.

    ``summary`` is the run's ``summary.json`` when it ended (``finished``/``pruned``); for an
    ``interrupted`` run it holds the ``epoch`` and ``step`` it will resume from.
    """

    run_id: str
    run_dir: Path
    state: RunState
    summary: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Train (or resume, or return) the run described by a config.

    Args:
        cfg: the validated run config.
        callbacks: called after every epoch (:class:`EpochCallback`); a returned reason prunes the run.
        stop: an external stop flag (jobs pass one that also reacts to SLURM's USR2); by
            default SIGTERM/SIGUSR1/SIGINT stop the loop at the next step boundary.
        progress: show a per-epoch progress bar (default: when stderr is a terminal).
        writer: where records go (default: a :class:`~suite.run.writer.RunWriter` of the run directory).

    Example:
        >>> from suite.config import load_config
        >>> trainer = Trainer(load_config(None, ["schedule.epochs=1"]))  # doctest: +SKIP
        >>> trainer.fit().state  # doctest: +SKIP
        <RunState.FINISHED: 'finished'>
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        callbacks: Sequence[EpochCallback] = (),
        stop: GracefulStop | None = None,
        progress: bool | None = None,
        writer: RunWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id(cfg)
        self.paths = RunPaths.of(cfg.run.output_root, self.run_id)
        self.callbacks = list(callbacks)
        self.stop = stop
        self.show_progress = sys.stderr.isatty() if progress is None else progress
        self.dist = distributed.context(cfg.run.device)  # one process: rank 0 of 1, no-op collectives
        self.writer = writer or RunWriter(self.paths, enabled=self.dist.is_main)
        self.state = TrainState()
        self._saved = (0, 0)  # (epoch, step) of the last checkpoint written or read
        self._val_images = 0  # images of the last evaluation

    # -- the recipe ------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Run the recipe to the end, to a stop signal, or to a callback's stop."""
        try:
            summary = read_summary(self.paths)
        except ValueError as err:  # never counts as done, never silently retrained over
            raise CorruptRecordError(
                f"{err}: run {self.run_id} does not count as finished; delete {self.paths.summary} to resume it from "
                f"its checkpoint, or delete {self.paths.root} to retrain it"
            ) from None
        if summary is not None:
            teacher = self._teacher_record(required=False)  # a finished student of a replaced teacher is not reused
            if self.writer.restore_config(self._config_record(json.loads(self.cfg.model_dump_json()), teacher)):
                self.writer.info("config.json of finished run %s was damaged: rewritten from its config", self.run_id)
            state = RunState.PRUNED if summary.get("status") == RunState.PRUNED.value else RunState.FINISHED
            return TrainResult(self.run_id, self.paths.root, state, summary)
        with self.dist.lock(lambda: run_lock(self.paths)):
            resolved = json.loads(self.cfg.model_dump_json())
            teacher = self._teacher_record()
            self.writer.start(
                config=self._config_record(resolved, teacher),
                tracking=self.cfg.tracking, run_id=self.run_id, name=self.cfg.name or self.run_id,
            )
            ended = RunState.FAILED
            own_stop = self.stop is None
            stop = self.stop or GracefulStop()
            try:
                if own_stop:
                    with stop:
                        result = self._fit(stop, resolved)
                else:
                    result = self._fit(stop, resolved)
                ended = result.state
                return result
            except KeyboardInterrupt:
                # A second Ctrl-C: stop now, without a new checkpoint. Every file is replaced
                # atomically, so the last good checkpoint stays where a resume restarts.
                ended = run_state(self.paths)
                if not ended.is_finished():
                    ended = RunState.INTERRUPTED
                    self.writer.info("second interrupt: stopped at once; resume restarts from the last checkpoint "
                                     "(epoch %d step %d)", *self._saved)
                    return TrainResult(self.run_id, self.paths.root, ended,
                                       {"epoch": self._saved[0], "step": self._saved[1]})
                return TrainResult(self.run_id, self.paths.root, ended, read_summary(self.paths) or {})
            except Exception as err:
                self.writer.failure(err)
                raise
            finally:
                self.writer.close(ended)
                if getattr(self, "data", None) is not None:
                    self.data.close()  # idle loader workers end now, not when the bundle is collected

    def _config_record(self, resolved: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
        """``config.json``: the resolved config, what the run is, and how it is computed."""
        batch = self.cfg.data.batch_size  # global, whatever the process count
        effective = {"global_batch": batch, "lr": self.cfg.optim.effective_lr(batch), "processes": self.dist.world_size}
        return {**resolved, "run_id": self.run_id, "id_version": ID_VERSION, "effective": effective, **teacher}

    def _teacher_record(self, *, required: bool = True) -> dict[str, Any]:
        """What the teacher is (``teacher_identity``, ``teacher_sha256``), recorded in config.json once.

        The run id names a teacher file by its path (a suite run folder by its run id), so the
        file's content is pinned here: a run refuses to resume, and a finished run refuses to be
        reported again, against a teacher whose content changed since the run started. The
        student would otherwise continue against, or pass off as trained with, another teacher.
        ``required=False`` skips the check when the file is not on this machine.
        """
        if self.cfg.teacher.checkpoint is None:
            return {}
        from suite.models.weights import resolve_checkpoint_path

        file = resolve_checkpoint_path(self.cfg.teacher.checkpoint)
        if not required and not file.is_file():
            return {}
        record = {"teacher_identity": teacher_identity(self.cfg.teacher.checkpoint), "teacher_sha256": file_sha256(file)}
        try:
            saved = read_json(self.paths.config)
        except (ValueError, UnicodeDecodeError):
            saved = None
        earlier = saved.get("teacher_sha256") if isinstance(saved, dict) else None
        if earlier is not None and earlier != record["teacher_sha256"]:
            raise ConfigError(
                f"teacher.checkpoint: {file} changed since run {self.run_id} started (sha256 {earlier[:12]} then, "
                f"{record['teacher_sha256'][:12]} now); its records belong to the old teacher. Restore the teacher "
                f"file, or delete {self.paths.root} to train the student against the new one"
            )
        return record

    def _fit(self, stop: GracefulStop, resolved: dict[str, Any]) -> TrainResult:
        self._resolved = resolved
        self._build()
        self._final: dict[str, Any] | None = None
        self._resume()
        self._session_start = time.perf_counter()
        if self._final is not None:
            return self._end(RunState(self._final.get("status", "finished")), self._final.get("reason"))
        for epoch in range(self.state.epoch, self.cfg.schedule.total_epochs):
            if not self._train_epoch(epoch, stop):
                self._checkpoint()
                self.writer.info(
                    "signal %s: checkpoint at epoch %d step %d; rerun to resume", stop.signum, epoch, self.state.step
                )
                return self._interrupted()
            row = self._end_of_epoch(epoch)
            reason = self.dist.broadcast(self._callbacks(row) if self.dist.is_main else None)
            if reason is not None:
                return self._end(RunState.PRUNED, reason)
            if self.dist.any(stop.requested, self.device) and epoch + 1 < self.cfg.schedule.total_epochs:
                if self._saved != (self.state.epoch, 0):  # run.checkpoint_every > 1 skipped this epoch's
                    self._checkpoint()
                self.writer.info("signal %s: checkpoint at end of epoch %d; rerun to resume", stop.signum, epoch + 1)
                return self._interrupted()
        return self._end(RunState.FINISHED)

    # -- build and resume -------------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.cfg
        self.device = self.dist.device(resolve_device(cfg.run.device))
        share = self.dist.threads()  # None when this process has its allocation to itself
        set_cpu_share(share)  # loader workers are sized from this process's share
        self.threads = configure_threads(cfg.run.threads or share)
        self.dist.check_batch(
            cfg.data.batch_size, mixing=cfg.mix.method != "none", groups=cfg.mix.groups, accum_steps=cfg.optim.accum_steps
        )
        cuda = self.device.type == "cuda"
        self.precision: Precision = resolve_precision(self.device, amp=cfg.run.amp, amp_dtype=cfg.run.amp_dtype)
        self.amp: bool | torch.dtype = self.precision.dtype if self.precision.enabled else False
        self.tf32 = enable_tf32(self.device)
        self.channels_last = cfg.run.channels_last and cuda
        seed_everything(derive_seed(cfg.run.seed, "init"))
        self.data: DataBundle = build_data(cfg.data, geometry=cfg.teacher.maps is not None)
        self.steps = steps_per_epoch(self.data, cfg.data)
        model = build_model(
            cfg.model.name,
            num_classes=self.data.num_classes,
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
        ).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward_model = self.dist.wrap(model, self.device)  # DDP when several processes train
        if cfg.run.compile:  # the training forward only: checkpoints and EMA keep the plain module's names
            self.forward_model = torch.compile(self.forward_model)
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps)
        self.ema = None
        if cfg.optim.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=cfg.optim.ema_decay)
        teacher = build_teacher(
            cfg, train_set=self.data.train, num_classes=self.data.num_classes, device=self.device,
            amp_dtype=self.precision.dtype if self.precision.enabled else None,
        )
        self.mixer = build_mixer(
            cfg.mix,
            num_classes=self.data.num_classes,
            teacher=teacher,
            fallback=cfg.teacher.fallback,
            clamp_negative=cfg.teacher.clamp_negative,
        )
        self.loss_fn = loss_fn(cfg.optim.loss)
        self.val_loader = eval_loader(  # eval.batch_size images per process
            self.data.val, cfg.data, cfg.eval.batch_size * self.dist.world_size, pin=cuda, rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    def _resume(self) -> None:
        if not self.paths.checkpoint.is_file():
            self.writer.info(
                "starting %s: %s on %s (%s, %d threads), %d steps/epoch",
                self.run_id, self.cfg.model.name, self._device_name(), self._precision_label(), self.threads,
                self.steps,
            )
            self.writer.metrics([])
            return
        ckpt = self._read_checkpoint()
        if ckpt.get("final"):  # the run ended; only its summary is missing: write it again, train nothing
            self.model.load_state_dict(ckpt["model"])
            if self.ema is not None and ckpt.get("model_ema") is not None:
                self.ema.module.load_state_dict(ckpt["model_ema"])
            self.state = TrainState.from_checkpoint(ckpt)
            self._saved = (self.state.epoch, self.state.step)
            self._final = ckpt
            self.writer.metrics(self.state.history)
            self.writer.info("%s ended at epoch %d; its summary is written again from its final weights",
                             self.run_id, self.state.epoch)
            return
        self._check_processes(ckpt)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and ckpt.get("model_ema") is not None:
            self.ema.module.load_state_dict(ckpt["model_ema"])
        self.precision.load_state_dict(ckpt.get("scaler"))
        self.state = TrainState.from_checkpoint(ckpt)
        self._saved = (self.state.epoch, self.state.step)
        set_rng_state(ckpt["rng"])
        self.writer.metrics(self.state.history)  # drop rows past the checkpoint, if any
        self.writer.info(
            "resuming %s at epoch %d step %d/%d", self.run_id, self.state.epoch, self.state.step, self.steps
        )

    def _check_processes(self, ckpt: Mapping[str, Any]) -> None:
        """Refuse to resume a mixing run with another process count than it was checkpointed with.

        Images pair for mixing within a process's share of the batch and each process draws its
        own masks, so another count silently changes the pairs and the draws: the run would no
        longer be the run its id names. Without mixing only the per-process seeds of dropout
        change; that is said in the log and the run goes on.
        """
        saved = ckpt.get("processes")
        now = self.dist.world_size
        if saved is None or int(saved) == now:
            return
        if self.cfg.mix.method != "none":
            raise ConfigError(
                f"run {self.run_id} was checkpointed with {saved} processes and resumes with {now}: mixing pairs "
                f"images within each process's batch, so another count changes the pairs. Resume it with {saved} "
                f"processes (resources.nodes x resources.gpus_per_node, or suite train --nproc {saved}), or delete "
                f"{self.paths.root} to retrain it"
            )
        self.writer.info("resuming with %d processes where the checkpoint had %d (no mixing: only dropout "
                         "draws change)", now, int(saved))

    def _device_name(self, *, index: bool = True) -> str:
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
            return f"{name} ({self.device})" if index else name
        return f"cpu ({platform.machine()})"

    def _precision_label(self) -> str:
        label = self.precision.name + (" + loss scaling" if self.precision.scaler is not None else "")
        return label + (", tf32" if self.tf32 else "")

    def _read_checkpoint(self) -> dict[str, Any]:
        """``checkpoint.pt``, or the one before it (``checkpoint.prev.pt``) when it is unreadable.

        Raises:
            RuntimeError: neither can be read; the message names the files and the fix.
        """
        errors = []
        for path in (self.paths.checkpoint, self.paths.previous_checkpoint):
            if not path.is_file():
                continue
            try:
                # On the CPU: the RNG states must stay there; load_state_dict moves the weights and
                # the optimiser state to their parameters' device.
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
                errors.append(f"{path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                continue
            if isinstance(ckpt, dict) and ckpt.get("final") and {"model", "epoch", "history", "best"} <= set(ckpt):
                return ckpt  # a finished run's final weights (run.keep_checkpoints=false): its summary was lost
            if not isinstance(ckpt, dict) or not {"model", "optimizer", "epoch", "step", "rng"} <= set(ckpt):
                errors.append(f"{path}: ValueError: not a suite training checkpoint")
                continue
            if errors:
                self.writer.info("unreadable %s; resuming from the previous checkpoint %s", errors[0], path.name)
            return ckpt
        raise RuntimeError(
            f"corrupt checkpoint: {'; '.join(errors)}. Delete {self.paths.checkpoint}"
            f"{' and ' + self.paths.previous_checkpoint.name if self.paths.previous_checkpoint.exists() else ''} "
            "to retrain the run from the start"
        )

    # -- one epoch ------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, stop: GracefulStop) -> bool:
        """Train the steps of ``epoch`` left to do; False when a stop signal ended it early."""
        from tqdm import tqdm

        cfg, state, device = self.cfg, self.state, self.device
        seed, log_every = cfg.run.seed, cfg.run.log_every
        first = state.step
        meter = DeviceMeter(self.dist.own_meter(state.meter, empty_meter()), device)
        loader = train_loader(self.data, cfg.data, seed=seed, epoch=epoch, start_step=first, pin=device.type == "cuda",
                              rank=self.dist.rank, world_size=self.dist.world_size)
        bar = tqdm(total=self.steps, initial=first, desc=f"epoch {epoch + 1}/{cfg.schedule.total_epochs}",
                   disable=not self.show_progress, leave=False)
        self.model.train()
        tick = time.perf_counter()
        step = first
        try:
            for batch in loader:
                self._step(batch, epoch, step, meter)
                step += 1
                bar.update(1)
                # Several processes agree on stopping at these host reads only (one all-reduce).
                stopping = stop.requested and not self.dist.active
                if meter.steps % log_every == 0:
                    sums = meter.read(0.0)
                    sums["loss_sum"], sums["images"], asked = self.dist.sync(
                        [sums["loss_sum"], sums["images"], float(stop.requested)], device
                    )
                    check_finite(sums, epoch, step)
                    bar.set_postfix(loss=f"{sums['loss_sum'] / max(1, sums['images']):.3f}")
                    stopping = asked > 0
                if stopping and step < self.steps:
                    state.step = step
                    state.meter = self.dist.reduce_meter(meter.read(time.perf_counter() - tick), device)
                    check_finite(state.meter, epoch, step)
                    return False
        finally:
            bar.close()
        state.step, state.meter = step, self.dist.reduce_meter(meter.read(time.perf_counter() - tick), device)
        check_finite(state.meter, epoch, step)
        return True

    def _step(self, batch: Sequence[torch.Tensor], epoch: int, step: int, meter: DeviceMeter) -> None:
        x, y = batch[0], batch[1]
        geometry = batch[2] if len(batch) > 2 else None
        step_seed = distributed.step_seed(self.cfg.run.seed, epoch, step, self.dist.rank)
        seed_everything(step_seed)
        gen = torch.Generator().manual_seed(step_seed)
        global_step = epoch * self.steps + step
        self.scheduler.step_update(global_step)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        x, target, stats = self.mixer(x, y, generator=gen, geometry=geometry)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler  # fp16 only: scaled loss, gradients unscaled before clipping
        loss = self._backward(x, target, scaler)
        if scaler is None:
            if self.cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
            self.optimizer.step()
        else:
            if self.cfg.optim.clip_grad:
                scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
            scaler.step(self.optimizer)
            scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=global_step)
        meter.add(loss, y.shape[0], stats.get("fallbacks", 0))

    def _backward(self, x: torch.Tensor, target: torch.Tensor, scaler: Any) -> torch.Tensor:
        """Forward and backward of this process's (mixed) batch; returns its mean loss, detached.

        With ``optim.accum_steps`` = k the batch goes through the model in k equal micro-batches,
        each loss weighted by its share, so the summed gradient is the whole batch's (up to float
        rounding): the batch was mixed whole before, so accumulation changes memory, not the
        recipe. Under DDP only the last micro-batch all-reduces the gradients (``no_sync``).
        """
        parts = self.cfg.optim.accum_steps
        total = x.new_zeros((), dtype=torch.float32)
        for k, (xs, ts) in enumerate(zip(x.chunk(parts), target.chunk(parts))):
            last = k == parts - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.forward_model, "no_sync") else (
                self.forward_model.no_sync()
            )
            with sync:
                with self.precision.autocast():
                    logits = self.forward_model(xs)
                loss = self.loss_fn(logits.float(), ts) * (xs.shape[0] / x.shape[0])
                (loss if scaler is None else scaler.scale(loss)).backward()
            total += loss.detach()
        return total

    def _end_of_epoch(self, epoch: int) -> dict[str, Any]:
        """Evaluate, then checkpoint, then write the metrics row (in that order)."""
        cfg, state = self.cfg, self.state
        s = state.meter
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": s["loss_sum"] / max(1, s["images"]),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": s["images"] / max(1e-9, s["seconds"]),
            "epoch_seconds": s["seconds"],
            "tokenmix_fallbacks": int(s["fallbacks"]),
        }
        if epoch + 1 == cfg.schedule.total_epochs or (epoch + 1) % cfg.eval.every == 0:
            row.update(self._evaluate(epoch))
        row["wall_time"] = time.time()
        state.history.append(row)
        state.epoch, state.step, state.meter = epoch + 1, 0, empty_meter()
        if epoch + 1 == cfg.schedule.total_epochs or (epoch + 1) % cfg.run.checkpoint_every == 0:
            self._checkpoint()  # a resume redoes the epochs after it (the same rows: resume is exact)
        self.writer.metrics(state.history, new_row=row)
        self.writer.info(
            "epoch %d/%d  loss %.4f  top1 %s  lr %.2e  %.0f img/s",
            epoch + 1, cfg.schedule.total_epochs, row["train_loss"], f"{row['top1']:.2f}" if "top1" in row else "-",
            row["lr"], row["images_per_s"],
        )
        return row

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        kwargs = dict(device=self.device, amp=self.amp, channels_last=self.channels_last)
        metrics = evaluate(self.model, self.val_loader, **kwargs)
        row = {"top1": metrics["top1"], "top5": metrics["top5"], "val_loss": metrics["loss"]}
        self._val_images = metrics["images"]
        best = self.state.best
        if metrics["top1"] > best["top1"]:
            best.update({"top1": metrics["top1"], "top5": metrics["top5"], "epoch": epoch + 1})
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.val_loader, **kwargs)
            row.update({"ema_top1": ema["top1"], "ema_top5": ema["top5"]})
            if ema["top1"] > best.get("ema_top1", -1.0):
                best.update({"ema_top1": ema["top1"], "ema_epoch": epoch + 1})
        return row

    def _callbacks(self, row: dict[str, Any]) -> str | None:
        for callback in self.callbacks:
            reason = callback(int(row["epoch"]), dict(row))
            if reason:
                return str(reason)
        return None

    # -- endings ----------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.state.seconds + time.perf_counter() - self._session_start

    def _payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "model_ema": None if self.ema is None else self.ema.module.state_dict(),
            "scaler": self.precision.state_dict(),  # fp16's loss scale; None for bf16 and fp32
            "processes": self.dist.world_size,
            **{**self.state.state_dict(), "seconds": self._elapsed()},
            "rng": rng_state(),
            "config": self._resolved,
        }

    def _checkpoint(self) -> None:
        self.writer.checkpoint(self._payload())
        self._saved = (self.state.epoch, self.state.step)

    def _interrupted(self) -> TrainResult:
        self.dist.barrier()  # no rank leaves (and is requeued) before rank 0's checkpoint is on disk
        where = {"epoch": self.state.epoch, "step": self.state.step}
        return TrainResult(self.run_id, self.paths.root, RunState.INTERRUPTED, where)

    def _end(self, state: RunState, reason: str | None = None) -> TrainResult:
        summary = self._summary(state, reason)
        self.writer.summary(summary)
        if not self.cfg.run.keep_checkpoints:  # the run is over: optimiser state and the fallback go
            self.writer.final_weights({
                "model": self.model.state_dict(),
                "model_ema": None if self.ema is None else self.ema.module.state_dict(),
                "final": True,  # weights only; teachers and weight readers take it as any checkpoint
                "status": state.value,
                "reason": reason,
                **{**self.state.state_dict(), "seconds": self._elapsed()},  # epochs, history: the summary again
                "processes": self.dist.world_size,
                "config": self._resolved,
            })
        if state is RunState.PRUNED:
            self.writer.info("pruned %s after epoch %d: %s", self.run_id, summary["epochs"], reason)
        else:
            self.writer.info("finished %s: top1 %.2f (best %.2f)", self.run_id, summary["top1"], summary["best_top1"])
        return TrainResult(self.run_id, self.paths.root, state, summary)

    def _summary(self, state: RunState, reason: str | None) -> dict[str, Any]:
        cfg, history, best = self.cfg, self.state.history, self.state.best
        seconds = self._elapsed()
        evaluated = [r for r in history if "top1" in r]
        last = evaluated[-1] if evaluated else {}
        patch = cfg.eval.occlusion_patch or cfg.model.resolved_patch_size() or max(1, cfg.data.img_size // 8)
        occlusion: dict[str, Any] = {}
        if cfg.eval.occlusion and state is RunState.FINISHED:
            occlusion = evaluate_occlusion(
                self.model, self.val_loader, fractions=list(cfg.eval.occlusion), patch=patch,
                seed=cfg.eval.occlusion_seed, device=self.device, amp=self.amp, channels_last=self.channels_last,
                occlusion_chunk=cfg.eval.batch_size,
            )
        images = sum(r["images_per_s"] * r["epoch_seconds"] for r in history)
        train_seconds = sum(r["epoch_seconds"] for r in history)
        gpus = self.dist.world_size if self.device.type == "cuda" else 0  # every GPU of the run
        best_top1 = best["top1"] if best["epoch"] > 0 else None
        best_ema = best.get("ema_top1")
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            "status": state.value,
            "name": cfg.name,
            "epochs": len(history),
            "top1": last.get("top1"),
            "top5": last.get("top5"),
            "val_loss": last.get("val_loss"),
            "val_images": self._val_images or len(self.data.val),  # the n of top-1's binomial error
            "best_top1": best_top1,
            "best_top5": best["top5"] if best_top1 is not None else None,
            "best_epoch": best["epoch"] if best_top1 is not None else None,
            "best_top1_max": max((v for v in (best_top1, best_ema) if v is not None), default=None),
            "wall_seconds": seconds,
            "train_seconds": train_seconds,
            "images_per_s": images / max(1e-9, train_seconds),
            "device": self._device_name(index=False),
            "precision": self.precision.name,
            "tf32": self.tf32,
            "threads": self.threads,
            "processes": self.dist.world_size,
            "gpu_hours": gpus * seconds / 3600.0,
            "tokenmix_fallbacks": sum(r.get("tokenmix_fallbacks", 0) for r in history),
            "occlusion_patch": patch if occlusion else None,
            **occlusion,
        }
        if reason is not None:
            summary["prune_reason"] = reason
        if "ema_top1" in last:
            summary.update({"ema_top1": last["ema_top1"], "ema_top5": last["ema_top5"], "best_ema_top1": best_ema})
        if any(not math.isfinite(v) for v in summary.values() if isinstance(v, float)):
            raise FloatingPointError(f"non-finite summary values: {summary}")
        return summary


def train(
    cfg: TrainConfig,
    *,
    callbacks: Sequence[EpochCallback] = (),
    stop: GracefulStop | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train (or resume, or return) the run described by ``cfg``: ``Trainer(cfg, ...).fit()``.

    Returns:
        A :class:`TrainResult` whose ``state`` is ``finished``, ``pruned`` or ``interrupted``.

    Raises:
        RunBusyError: another process is training this run.
        CorruptRecordError: the run's ``summary.json`` is unreadable (the message names the file and the fix).
        Exception: whatever training raised; ``failure.json`` records it and the run is ``failed``.
    """
    return Trainer(cfg, callbacks=callbacks, stop=stop, progress=progress).fit()
