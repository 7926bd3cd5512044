"""End-to-end tiny trainings: run records, no retraining, exact resume, W&B offline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suite.config import load_config, run_id
from suite.run.records import RunState, read_run
from suite.train.trainer import train
from tests.helpers import StopAfter, hold_env, wait_held

COMPARED = ("top1", "top5", "val_loss", "best_top1", "occ50_top1")


def test_run_directory_holds_every_record(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, tiny_overrides)
    result = train(cfg)
    assert result.state is RunState.FINISHED
    record = read_run(result.run_dir)
    assert record.state is RunState.FINISHED
    assert record.config["run_id"] == run_id(cfg) == result.run_dir.name
    assert [m["epoch"] for m in record.metrics] == [1, 2]
    for row in record.metrics:
        assert {"train_loss", "top1", "top5", "lr", "images_per_s", "wall_time"} <= row.keys()
    summary = record.summary
    assert summary["status"] == "finished" and summary["epochs"] == 2
    assert 0 <= summary["top1"] <= 100 and summary["top5"] >= summary["top1"]
    assert "occ50_top1" in summary and summary["gpu_hours"] == 0.0
    # the time before the first step (model and data build) is recorded apart from the training
    assert summary["setup_seconds"] > 0 and summary["wall_seconds"] > summary["train_seconds"] > 0
    assert (result.run_dir / "checkpoint.pt").is_file() and (result.run_dir / "train.log").is_file()
    assert not list(result.run_dir.glob(".*.tmp"))  # no temporary files left behind


def test_a_finished_run_keeps_its_final_weights_only_unless_asked(tiny_overrides: list[str], tmp_path: Path) -> None:
    from suite.models.weights import read_weights

    lean = train(load_config(None, [*tiny_overrides, "optim.ema_decay=0.9", f"run.output_root={tmp_path / 'lean'}"]))
    kept = train(load_config(None, [*tiny_overrides, "optim.ema_decay=0.9", "run.keep_checkpoints=true",
                                    f"run.output_root={tmp_path / 'kept'}"]))
    assert lean.run_id == kept.run_id and lean.summary["top1"] == kept.summary["top1"]
    final = torch.load(lean.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    full = torch.load(kept.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert final["final"] is True and "optimizer" not in final and "rng" not in final
    assert not (lean.run_dir / "checkpoint.prev.pt").exists() and (kept.run_dir / "checkpoint.prev.pt").is_file()
    for key in ("model", "model_ema"):  # the same weights, student and EMA
        for name, value in full[key].items():
            assert torch.equal(final[key][name], value), (key, name)
    assert (lean.run_dir / "checkpoint.pt").stat().st_size < 0.5 * (kept.run_dir / "checkpoint.pt").stat().st_size
    weights, config = read_weights(lean.run_dir / "checkpoint.pt")  # as a teacher reads it: the EMA
    assert config is not None and all(torch.equal(weights[k], full["model_ema"][k]) for k in weights)
    (lean.run_dir / "summary.json").unlink()  # a lost summary: written again from the final checkpoint
    again = train(load_config(None, [*tiny_overrides, "optim.ema_decay=0.9", f"run.output_root={tmp_path / 'lean'}"]))
    assert again.state is RunState.FINISHED
    for key in ("top1", "best_top1", "best_ema_top1", "epochs", "val_loss"):
        assert again.summary[key] == lean.summary[key], key
    assert "summary is written again from its final weights" in (lean.run_dir / "train.log").read_text()


def test_finished_run_is_not_retrained(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, tiny_overrides)
    first = train(cfg)
    stamp = (first.run_dir / "summary.json").stat().st_mtime_ns
    again = train(cfg)
    assert again.summary == first.summary
    assert (first.run_dir / "summary.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("stop_after", [3, 8])  # mid-epoch 1, and exactly at the epoch boundary
def test_interrupted_run_resumes_to_identical_metrics(tiny_overrides: list[str], tmp_path: Path, stop_after: int) -> None:
    reference = train(load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'int'}"])
    stopped = train(cfg, stop=StopAfter(stop_after))
    assert stopped.state is RunState.INTERRUPTED
    assert read_run(stopped.run_dir).state is RunState.INTERRUPTED
    resumed = train(cfg)
    assert resumed.state is RunState.FINISHED
    for key in COMPARED:
        assert resumed.summary[key] == reference.summary[key], key
    ref_rows = read_run(reference.run_dir).metrics
    res_rows = read_run(resumed.run_dir).metrics
    assert [r["train_loss"] for r in res_rows] == [r["train_loss"] for r in ref_rows]


def test_a_compiled_run_keeps_its_id_and_checkpoint_names_and_resumes_exactly(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    compiled = [*tiny_overrides, "run.compile=true", "eval.occlusion=[]", "schedule.epochs=1"]
    eager = train(load_config(None, [*tiny_overrides, "eval.occlusion=[]", "schedule.epochs=1",
                                     f"run.output_root={tmp_path / 'eager'}"]))
    reference = train(load_config(None, [*compiled, f"run.output_root={tmp_path / 'ref'}"]))
    assert reference.run_id == eager.run_id  # compiling is how a run executes, not what it is
    # the checkpoint holds the plain module's names (no torch.compile "_orig_mod." prefix), so a
    # compiled run's weights load anywhere, as a teacher or into an eager resume
    weights = torch.load(reference.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    eager_weights = torch.load(eager.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert weights.keys() == eager_weights.keys()
    for a, b in zip(read_run(eager.run_dir).metrics, read_run(reference.run_dir).metrics):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)  # the same training, fused
    cfg = load_config(None, [*compiled, f"run.output_root={tmp_path / 'int'}"])
    assert train(cfg, stop=StopAfter(3)).state is RunState.INTERRUPTED
    resumed = train(cfg)
    assert [r["train_loss"] for r in read_run(resumed.run_dir).metrics] == [
        r["train_loss"] for r in read_run(reference.run_dir).metrics
    ]
    assert resumed.summary["top1"] == reference.summary["top1"]


def test_sigterm_mid_epoch_then_rerun_matches_uninterrupted(tiny_overrides: list[str], tmp_path: Path) -> None:
    """The real thing: ``suite train`` killed with SIGTERM, then the same command again."""
    overrides = [o for o in tiny_overrides if not o.startswith(("run.output_root", "schedule.epochs"))]
    overrides += ["schedule.epochs=3", "data.train_size=512"]
    reference = train(load_config(None, [*overrides, f"run.output_root={tmp_path / 'ref'}"]))
    cmd = [sys.executable, "-m", "suite.cli", "train", *overrides, f"run.output_root={tmp_path / 'int'}"]
    held = tmp_path / "held"
    proc = subprocess.Popen(cmd, env=hold_env(held, (1, 2)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    run_dir = tmp_path / "int" / reference.run_id
    wait_held(held, proc)  # after step 3 of epoch 2, waiting for the signal
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    assert "interrupted" in out
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) != (3, 0)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming" in rerun.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in COMPARED:
        assert summary[key] == reference.summary[key], key


def test_failed_run_records_its_error(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, [*tiny_overrides, "optim.lr=1e30", "schedule.warmup_epochs=0"])
    with pytest.raises(FloatingPointError):
        train(cfg)
    record = read_run(Path(cfg.run.output_root) / run_id(cfg))
    assert record.state is RunState.FAILED
    assert record.failure["error"] == "FloatingPointError" and "non-finite training loss" in record.failure["message"]
    assert not (record.paths.checkpoint).exists()  # no checkpoint of non-finite weights


def test_wandb_offline_run_uses_the_run_id_and_never_writes_the_key(tiny_overrides: list[str], monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    overrides = [o for o in tiny_overrides if not o.startswith("tracking.")] + ["tracking.mode=offline"]
    cfg = load_config(None, overrides)
    result = train(cfg)
    offline = list((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(result.run_id)
    assert (offline[0] / f"run-{result.run_id}.wandb").is_file()
    for path in result.run_dir.rglob("*"):
        if path.is_file():
            assert b"k" * 40 not in path.read_bytes(), path


def test_imagefolder_data_trains(image_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            f"data={image_folder}",
            "data.img_size=32",
            "data.batch_size=4",
            "model.depth=1",
            "schedule.epochs=1",
            "eval.occlusion=[]",
            "tracking.mode=disabled",
            "data.workers=0",
            f"run.output_root={tmp_path}",
        ],
    )
    result = train(cfg)
    assert result.summary["epochs"] == 1
    assert read_run(result.run_dir).config["data"]["source"] == "folder"


class _CrashAt:
    """A callback that fails the run at the end of ``epoch`` (a crash between checkpoints)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, epoch: int, metrics: dict) -> None:
        if epoch == self.epoch:
            raise RuntimeError(f"crash after epoch {epoch}")


def test_sparse_checkpoints_resume_redoes_the_epochs_after_the_last_one(tiny_overrides: list[str], tmp_path: Path) -> None:
    """run.checkpoint_every=2: a crash after epoch 3 resumes from epoch 2 and ends as if uninterrupted."""
    base = [*tiny_overrides, "schedule.epochs=4"]
    reference = train(load_config(None, [*base, f"run.output_root={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*base, f"run.output_root={tmp_path / 'sparse'}", "run.checkpoint_every=2"])
    assert cfg.run.checkpoint_every == 2
    with pytest.raises(RuntimeError, match="crash after epoch 3"):
        train(cfg, callbacks=[_CrashAt(3)])
    record = read_run(tmp_path / "sparse" / reference.run_id)  # output-only: the same run id
    assert record.state is RunState.FAILED and len(record.metrics) == 3
    assert torch.load(record.paths.checkpoint, weights_only=False)["epoch"] == 2
    resumed = train(cfg)
    assert resumed.state is RunState.FINISHED
    assert [r["epoch"] for r in read_run(resumed.run_dir).metrics] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in read_run(resumed.run_dir).metrics] == [
        r["train_loss"] for r in read_run(reference.run_dir).metrics
    ]
    assert torch.load(resumed.run_dir / "checkpoint.pt", weights_only=False)["epoch"] == 4  # the last epoch always
