"""The parts of the CUDA path that a CPU can check: resume of a checkpoint whose tensors were not
loaded on the CPU, loss scaling (fp16), precision choice, process count on resume, and
evaluation that does not depend on how the validation set is batched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from suite.config import ConfigError, load_config
from suite.train.evaluate import evaluate, evaluate_occlusion
from suite.train.occlusion import OcclusionMasks, occlusion_mask, occlude_patches
from suite.device.precision import Precision, _pick, resolve_precision
from suite.run.records import RunState
from suite.train.checkpoints import read_checkpoint
from suite.train.state import set_rng_state as _set_rng_state
from suite.train.trainer import Trainer, train


def test_resume_reads_the_checkpoint_on_the_cpu_whatever_the_training_device(tiny_overrides: list[str]) -> None:
    # A GPU run's trainer has device cuda:N; its checkpoint used to be loaded there, so the saved
    # RNG state landed on the GPU and `.numpy()` / `torch.set_rng_state` raised on every resume.
    # The meta device stands in for a device that is not the CPU.
    # run.keep_checkpoints: the finished run keeps its full training checkpoint to read back
    cfg = load_config(None, [*tiny_overrides, "schedule.epochs=1", "eval.occlusion=[]", "run.keep_checkpoints=true"])
    done = train(cfg)
    assert done.state is RunState.FINISHED
    trainer = Trainer(cfg)
    trainer.device = torch.device("meta")
    ckpt = read_checkpoint(trainer.paths, trainer.writer.info)
    assert ckpt["mixing_stream"] == 2  # every checkpoint says how its steps drew their mixing
    tensors = [t for t in _tensors(ckpt) if isinstance(t, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    before = torch.get_rng_state()
    torch.manual_seed(1234)
    _set_rng_state(ckpt["rng"])
    assert torch.equal(torch.get_rng_state(), ckpt["rng"]["torch"])
    torch.set_rng_state(before)


def _tensors(value: object) -> list[object]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return [value]


def test_amp_dtype_follows_the_gpu() -> None:
    assert _pick("auto", native=True) is torch.bfloat16  # A100, H100
    assert _pick("auto", native=False) is torch.float16  # V100: fp16 tensor cores, no native bf16
    assert _pick("fp16", native=True) is torch.float16
    cpu = resolve_precision(torch.device("cpu"), amp=True, amp_dtype="fp16")
    assert cpu.name == "fp32" and cpu.scaler is None  # CPU runs are float32
    with pytest.raises(ValueError, match="run.amp_dtype"):
        resolve_precision(torch.device("cpu"), amp=True, amp_dtype="fp8")


def test_amp_dtype_is_a_checked_option_that_leaves_run_ids_alone() -> None:
    from suite.config import run_id

    assert run_id(load_config(None, [])) == run_id(load_config(None, ["run.amp_dtype=auto"]))
    with pytest.raises(ConfigError, match="run.amp_dtype"):
        load_config(None, ["run.amp_dtype=fp8"])


def test_loss_scaling_trains_exactly_like_unscaled_and_resumes_its_scale(
    tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # fp16's path (scale, unscale before clipping, scaler step) on the CPU: a power-of-two loss
    # scale is exact in float32, so the trajectory must equal the unscaled one bit for bit.
    extra = ["mix.method=cutmix", "optim.clip_grad=1.0", "eval.occlusion=[]", "run.keep_checkpoints=true"]
    plain = train(load_config(None, [*tiny_overrides, *extra]))

    def scaled(device: torch.device, *, amp: bool, amp_dtype: str) -> Precision:
        return Precision(device, enabled=False, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))

    monkeypatch.setattr("suite.train.trainer.resolve_precision", scaled)
    other = [*tiny_overrides[:-1], f"run.output_root={tmp_path / 'scaled'}"]
    result = train(load_config(None, [*other, *extra]))
    assert result.summary["top1"] == plain.summary["top1"]
    assert result.summary["val_loss"] == plain.summary["val_loss"]
    ckpt = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] == pytest.approx(2.0**12)  # no overflow: the scale stayed
    assert ckpt["processes"] == 1


def _resumable(tiny_overrides: list[str], method: str, processes: int) -> Trainer:
    """A finished one-epoch run made resumable again, as if checkpointed with ``processes`` ranks."""
    cfg = load_config(None, [*tiny_overrides, f"mix.method={method}", "schedule.epochs=1", "eval.occlusion=[]",
                             "run.keep_checkpoints=true"])  # the full training checkpoint, not final weights
    result = train(cfg)
    ckpt_path = result.run_dir / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt.update(processes=processes, epoch=0, step=2, history=[])
    torch.save(ckpt, ckpt_path)
    (result.run_dir / "summary.json").unlink()
    return Trainer(cfg)


def test_a_mixing_run_refuses_to_resume_with_another_process_count(tiny_overrides: list[str]) -> None:
    trainer = _resumable(tiny_overrides, "cutmix", processes=2)
    with pytest.raises(ConfigError, match="checkpointed with 2 processes and resumes with 1"):
        trainer.fit()


def test_a_run_without_mixing_resumes_with_another_process_count(tiny_overrides: list[str]) -> None:
    trainer = _resumable(tiny_overrides, "none", processes=2)
    result = trainer.fit()
    assert result.state is RunState.FINISHED
    log = (result.run_dir / "train.log").read_text()
    assert "resuming with 1 processes where the checkpoint had 2" in log


@pytest.mark.parametrize(
    ("fields", "saved", "said"),
    [
        ({"method": "tokenmix", "groups": 8}, None, True),  # a checkpoint from before the stream was saved
        ({"method": "tokenmix", "groups": 8}, 2, False),
        ({"method": "tokenmix"}, None, False),  # ungrouped TokenMix never changed stream
        ({"method": "cutmix", "groups": 8}, None, False),
    ],
)
def test_a_grouped_tokenmix_resume_across_mixing_streams_is_logged(fields: dict, saved: int | None, said: bool) -> None:
    from suite.config import MixConfig
    from suite.train.checkpoints import MIXING_STREAM, check_resume

    lines: list[str] = []
    ckpt = {"processes": 1} | ({} if saved is None else {"mixing_stream": saved})
    check_resume(ckpt, MixConfig(**fields), processes=1, run_id="r1", root=Path("."),
                 info=lambda fmt, *args: lines.append(fmt % args))
    assert MIXING_STREAM == 2
    assert bool(lines) is said
    if said:
        assert "run r1 was checkpointed with mixing stream 1 and resumes with 2" in lines[0]
        assert "delete the run folder" in lines[0]


def test_occlusion_masks_follow_the_image_not_the_batching() -> None:
    size, chunk = 37, 8
    masks = OcclusionMasks(size, 4, 4, 0.5, seed=3, chunk=chunk)
    # The masks of a single-process evaluation in batches of `chunk`, as drawn before: one CPU
    # generator, one draw per batch in order.
    gen = torch.Generator().manual_seed(3)
    sequential = torch.cat([occlusion_mask(min(chunk, size - i), 4, 4, 0.5, gen) for i in range(0, size, chunk)])
    assert torch.equal(masks(torch.arange(size)), sequential)
    # Another process's rows (positions 1, 3, 5, ... of 2 ranks), asked in batches of 5.
    again = OcclusionMasks(size, 4, 4, 0.5, seed=3, chunk=chunk)
    rank1 = torch.arange(1, size, 2)
    got = torch.cat([again(rank1[i : i + 5]) for i in range(0, len(rank1), 5)])
    assert torch.equal(got, sequential[1::2])


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def test_evaluation_does_not_depend_on_the_evaluation_batch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 5))
    x, y = torch.randn(45, 3, 16, 16), torch.randint(0, 5, (45,))
    cpu = torch.device("cpu")
    a = evaluate(model, _loader(x, y, 45), device=cpu)
    b = evaluate(model, _loader(x, y, 7), device=cpu)
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    kwargs = dict(fractions=[0.25, 0.5], patch=4, seed=0, device=cpu, occlusion_chunk=16)
    occ_a = evaluate_occlusion(model, _loader(x, y, 16), **kwargs)
    occ_b = evaluate_occlusion(model, _loader(x, y, 9), **kwargs)
    assert occ_a == occ_b
    # The same images as the former per-batch draw with batches of the chunk size.
    gen = torch.Generator().manual_seed(0)
    occluded = torch.cat([occlude_patches(x[i : i + 16], 4, 0.5, gen) for i in range(0, 45, 16)])
    expected = 100.0 * (model(occluded).argmax(1) == y).float().mean().item()
    assert occ_a["occ50_top1"] == pytest.approx(expected)


def test_a_stop_at_an_epoch_end_writes_that_epochs_checkpoint_with_sparse_checkpoints(
    tiny_overrides: list[str],
) -> None:
    # run.checkpoint_every=8 skips epoch 1's checkpoint; a stop there used to say "checkpoint at end of
    # epoch 1" while the checkpoint on disk was older, so a resume redid the epoch.
    from suite.run.signals import GracefulStop

    cfg = load_config(None, [*tiny_overrides, "schedule.epochs=3", "run.checkpoint_every=8", "eval.occlusion=[]"])
    stop = GracefulStop()

    def stop_after_first(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            stop.request()

    result = train(cfg, callbacks=[stop_after_first], stop=stop)
    assert result.state is RunState.INTERRUPTED
    ckpt = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0)
    resumed = train(cfg)
    assert resumed.state is RunState.FINISHED
    assert "resuming" in (result.run_dir / "train.log").read_text()
    assert len((result.run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_train_rewrites_the_damaged_config_of_a_finished_run(tiny_overrides: list[str]) -> None:
    import json

    # run.keep_checkpoints: the finished run keeps its full training checkpoint to read back
    cfg = load_config(None, [*tiny_overrides, "schedule.epochs=1", "eval.occlusion=[]", "run.keep_checkpoints=true"])
    done = train(cfg)
    config = done.run_dir / "config.json"
    before = json.loads(config.read_text())
    config.write_text('{"model": {"na')  # a torn write
    again = train(cfg)
    assert again.state is RunState.FINISHED and again.summary == done.summary  # never retrained
    assert json.loads(config.read_text()) == before
