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
fallback for a damaged ``checkpoint.pt``; see ``suite.train.checkpoints``). A callback may stop the
run after an epoch with a reason: it ends ``pruned`` and is never resumed. A run that ended
(``finished`` or ``pruned``) is never retrained: :func:`train` returns its summary at once. Every
file and the W&B run pass through one :class:`~suite.run.writer.RunWriter`, the seam where a
data-parallel run lets rank 0 write and silences the other ranks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from suite.device import distributed
from suite.config import TrainConfig, run_id
from suite.data.loaders import DataBundle, build_data, eval_loader, eval_subset, steps_per_epoch, train_loader
from suite.run.seeds import derive_seed, seed_everything
from suite.train.evaluate import evaluate_epoch, evaluate_occlusion
from suite.train.checkpoints import check_resume, final_payload, read_checkpoint, training_payload
from suite.train.result import EpochCallback, TrainResult
from suite.train.run_config import config_record, teacher_record
from suite.train.recipe import build_optimizer, build_scheduler, loss_fn, optimizer_step
from suite.train.summary import run_summary
from suite.train.state import DeviceMeter, TrainState, check_finite, empty_meter, rng_state, set_rng_state
from suite.device.hardware import configure_threads, device_label, resolve_device, set_cpu_share
from suite.mixing.mixer import build_mixer
from suite.models.factory import build_model
from suite.device.precision import Precision, enable_tf32, resolve_precision
from suite.run.records import CorruptRecordError, RunPaths, RunState, read_summary, run_lock, run_state
from suite.run.clock import setup_origin
from suite.run.signals import GracefulStop
from suite.teacher.build import build_teacher
from suite.run.writer import RunWriter

__all__ = ["EpochCallback", "TrainResult", "TrainState", "Trainer", "train"]


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
        self._setup_from = setup_origin()

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
            # a finished student of a replaced teacher is not reused (teacher_record raises)
            teacher = teacher_record(self.cfg, self.paths, self.run_id, required=False)
            record = config_record(self.cfg, run_id=self.run_id, processes=self.dist.world_size,
                                   resolved=json.loads(self.cfg.model_dump_json()), teacher=teacher)
            if self.writer.restore_config(record):
                self.writer.info("config.json of finished run %s was damaged: rewritten from its config", self.run_id)
            state = RunState.PRUNED if summary.get("status") == RunState.PRUNED.value else RunState.FINISHED
            return TrainResult(self.run_id, self.paths.root, state, summary)
        with self.dist.lock(lambda: run_lock(self.paths)):
            resolved = json.loads(self.cfg.model_dump_json())
            teacher = teacher_record(self.cfg, self.paths, self.run_id)
            self.writer.start(
                config=config_record(self.cfg, run_id=self.run_id, processes=self.dist.world_size, resolved=resolved,
                                     teacher=teacher),
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

    def _fit(self, stop: GracefulStop, resolved: dict[str, Any]) -> TrainResult:
        self._resolved = resolved
        self._build()
        self._final: dict[str, Any] | None = None
        self._resume()
        self._session_start = time.perf_counter()
        self.state.setup_seconds += max(0.0, time.time() - self._setup_from)
        if self._final is not None:
            return self._end(RunState(self._final.get("status", "finished")), self._final.get("reason"))
        for epoch in range(self.state.epoch, self.cfg.schedule.total_epochs):
            if not self._train_epoch(epoch, stop):
                self._checkpoint()
                self.writer.info("signal %s: checkpoint at epoch %d step %d; rerun to resume",
                                 stop.signum, epoch, self.state.step)
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
        loader = functools.partial(  # eval.batch_size images per process
            eval_loader, cfg=cfg.data, batch_size=cfg.eval.batch_size * self.dist.world_size, pin=cuda,
            rank=self.dist.rank, world_size=self.dist.world_size)
        self.val_loader = loader(self.data.val)  # eval.subset: the curve's evaluations see a seeded part
        curve = eval_subset(self.data.val, cfg.eval.subset, cfg.data.data_seed) if cfg.eval.subset else None
        self.curve_loader = self.val_loader if curve is None else loader(curve)

    def _resume(self) -> None:
        if not self.paths.checkpoint.is_file():
            self.writer.info(
                "starting %s: %s on %s (%s, %d threads), %d steps/epoch",
                self.run_id, self.cfg.model.name, device_label(self.device), self._precision_label(), self.threads, self.steps,
            )
            self.writer.metrics([])
            return
        ckpt = read_checkpoint(self.paths, self.writer.info)
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
        check_resume(ckpt, self.cfg.mix, processes=self.dist.world_size, run_id=self.run_id, root=self.paths.root,
                     info=self.writer.info)
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

    def _precision_label(self) -> str:
        label = self.precision.name + (" + loss scaling" if self.precision.scaler is not None else "")
        return label + (", tf32" if self.tf32 else "")

    # -- one epoch ------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, stop: GracefulStop) -> bool:
        """Train the steps of ``epoch`` left to do; False when a stop signal ended it early."""
        from tqdm import tqdm

        cfg, state, device = self.cfg, self.state, self.device
        seed, log_every = cfg.run.seed, cfg.run.log_every
        first = state.step
        meter = DeviceMeter(self.dist.own_meter(state.meter, empty_meter()), device)
        loader = train_loader(self.data, cfg.data, seed=seed, epoch=epoch, start_step=first, pin=device.type == "cuda",
                              rank=self.dist.rank, world_size=self.dist.world_size, device=device)
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
        optimizer_step(self.optimizer, self.model, clip_grad=self.cfg.optim.clip_grad, scaler=scaler)
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
            row.update(self._evaluate(epoch, last=epoch + 1 == cfg.schedule.total_epochs))
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

    def _evaluate(self, epoch: int, *, last: bool) -> dict[str, Any]:
        """The whole set at the last epoch, else ``eval.subset``'s first; best epoch: whole-set ones only."""
        loader = self.val_loader if last else self.curve_loader
        row, metrics, ema = evaluate_epoch(self.model, None if self.ema is None else self.ema.module, loader,
                                           device=self.device, amp=self.amp, channels_last=self.channels_last)
        if loader is self.val_loader:
            self.state.note_best(epoch + 1, metrics, ema)
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

    def _counters(self) -> dict[str, Any]:
        return {**self.state.state_dict(), "seconds": self._elapsed()}

    def _checkpoint(self) -> None:
        self.writer.checkpoint(training_payload(
            model=self.model, optimizer=self.optimizer, ema=None if self.ema is None else self.ema.module,
            scaler=self.precision.state_dict(), processes=self.dist.world_size, counters=self._counters(),
            rng=rng_state(), config=self._resolved,
        ))
        self._saved = (self.state.epoch, self.state.step)

    def _interrupted(self) -> TrainResult:
        self.dist.barrier()  # no rank leaves (and is requeued) before rank 0's checkpoint is on disk
        where = {"epoch": self.state.epoch, "step": self.state.step}
        return TrainResult(self.run_id, self.paths.root, RunState.INTERRUPTED, where)

    def _end(self, state: RunState, reason: str | None = None) -> TrainResult:
        summary = self._summary(state, reason)
        self.writer.summary(summary)
        if not self.cfg.run.keep_checkpoints:  # the run is over: optimiser state and the fallback go
            self.writer.final_weights(final_payload(
                model=self.model, ema=None if self.ema is None else self.ema.module, status=state.value,
                reason=reason, processes=self.dist.world_size, counters=self._counters(), config=self._resolved,
            ))
        if state is RunState.PRUNED:
            self.writer.info("pruned %s after epoch %d: %s", self.run_id, summary["epochs"], reason)
        else:
            self.writer.info("finished %s: top1 %.2f (best %.2f)", self.run_id, summary["top1"], summary["best_top1"])
        return TrainResult(self.run_id, self.paths.root, state, summary)

    def _summary(self, state: RunState, reason: str | None) -> dict[str, Any]:
        cfg = self.cfg
        patch = cfg.eval.occlusion_patch or cfg.model.resolved_patch_size() or max(1, cfg.data.img_size // 8)
        occlusion: dict[str, Any] = {}
        if cfg.eval.occlusion and state is RunState.FINISHED:
            occlusion = evaluate_occlusion(
                self.model, self.val_loader, fractions=list(cfg.eval.occlusion), patch=patch,
                seed=cfg.eval.occlusion_seed, device=self.device, amp=self.amp, channels_last=self.channels_last,
                occlusion_chunk=cfg.eval.batch_size,
            )
        machine = {
            "device": device_label(self.device, index=False), "precision": self.precision.name, "tf32": self.tf32,
            "threads": self.threads, "processes": self.dist.world_size,
            "gpus": self.dist.world_size if self.device.type == "cuda" else 0,
        }
        return run_summary(
            cfg, run_id=self.run_id, state=state, reason=reason, history=self.state.history, best=self.state.best,
            seconds=self._elapsed(), setup_seconds=self.state.setup_seconds, occlusion=occlusion, patch=patch,
            val_images=next((r["val_images"] for r in reversed(self.state.history) if "val_images" in r),
                            len(self.data.val)), machine=machine,
        )


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
