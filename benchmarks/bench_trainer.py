"""Throughput of the training loop against a bare loop of the same model, and of the GPU step.

``builtin`` and ``folder``: ``suite train`` (the real :class:`suite.train.trainer.Trainer`: data
loading, mixing, device-side running totals, per-epoch evaluation excluded, checkpoint and
records included) is timed from its own ``metrics.jsonl`` rows (``images_per_s`` of the epochs
after the first). The bare loop runs only forward, backward and the optimiser step of the same
model on one batch held in memory. For the ImageFolder case the time of one step is split into
loading wait, mixing and the optimiser step, measured separately on the same batches.

``gpu``: the training step itself, with the loader out of the way. The batch is held on the
device (or in pinned host memory, as the loader hands it over), so nothing waits for JPEG
decoding. Each row runs ``--warmup`` steps untimed, then times ``--steps`` steps as one window
between two ``torch.cuda.synchronize`` calls. The suite's rows call the real
``Trainer._step`` of a built trainer (seeds, lr schedule, mixing, channels_last, bf16
autocast, loss, AdamW, EMA, device meter); the bare loop uses the same channels_last and bf16
autocast. ``--dry-run`` runs the same code with a tiny model for a few steps, on CPU too, so the
benchmark stays tested; its numbers mean nothing.

    .venv/bin/python benchmarks/bench_trainer.py --case builtin     # vit_micro 32 px, batch 128, TokenMix
    .venv/bin/python benchmarks/bench_trainer.py --case folder      # deit_tiny 224 px, batch 64, TokenMix
    .venv/bin/python benchmarks/bench_trainer.py --case gpu         # deit_small 224 px, batch 256, bf16 (CUDA)
    .venv/bin/python benchmarks/bench_trainer.py --case gpu --dry-run   # the gpu case in miniature, any device
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import suite  # noqa: F401 - torchvision shim before timm
import suite.train.trainer as trainer_module
from suite.config import TrainConfig, load_config
from suite.data.loaders import build_data, train_loader
from suite.run.seeds import derive_seed
from suite.mixing.mixer import build_mixer
from suite.models.factory import build_model
from suite.train.recipe import loss_fn as _loss_fn
from suite.train.state import DeviceMeter as _DeviceMeter
from suite.train.state import empty_meter as _empty_meter
from suite.train.trainer import Trainer

CASES = {
    "builtin": dict(model="vit_micro_patch4_32", img=32, batch=128, grid=8, epochs=4,
                    data=["data=builtin", "data.train_size=6016", "data.val_size=256"]),
    "folder": dict(model="deit_tiny_patch16_224", img=224, batch=64, grid=14, epochs=2, data=None),
    "gpu": dict(model="deit_small_patch16_224", img=224, batch=256, grid=14, groups=128, classes=1000),
}
DRY_RUN = dict(model="vit_micro_patch4_32", img=32, batch=16, grid=8, groups=8, classes=10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _folder(root: Path, images: int, classes: int = 10, size: int = 256) -> Path:
    """A generated ImageNet-layout tree of JPEGs (real decode work, no download)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", max(classes, images // 8))):
        for i in range(count):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def _window(step: Callable[[int], None], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step: ``warmup`` untimed steps, then ``steps`` steps between two device syncs."""
    for i in range(warmup):
        step(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync(device)
    return (time.perf_counter() - start) / steps


def _bare(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, device: torch.device, amp: bool,
          steps: int, warmup: int = 2) -> float:
    """Seconds per step of forward + backward + AdamW on one batch held in memory, with the suite's
    memory format (channels_last on CUDA) and autocast (bf16 on CUDA)."""
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = _loss_fn("soft_ce")

    def step(_: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = loss_fn(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _window(step, device, warmup, steps)


# -- the gpu case: the training step, with the loader out of the way ---------------------------


def _step_config(case: dict, root: Path, extra: list[str]) -> TrainConfig:
    """A run config of the case; its training set is one batch of built-in images, never loaded."""
    return load_config(None, [
        "data=builtin", f"data.train_size={case['batch']}", "data.val_size=16", f"data.img_size={case['img']}",
        f"data.batch_size={case['batch']}", f"model.name={case['model']}", "mix.method=tokenmix",
        "mix.mixup_alpha=0", "mix.target=area", f"mix.token_grid={case['grid']}", "eval.occlusion=[]",
        "tracking.mode=disabled", f"run.output_root={root}", *extra,
    ])


def _built_trainer(cfg: TrainConfig, classes: int) -> Trainer:
    """A :class:`Trainer` after its build (model, optimiser, schedule, EMA, mixer), with ``classes``
    classes (the built-in data has 10; an ImageNet head has 1000)."""
    real = build_data

    def data(*args, **kwargs):
        bundle = real(*args, **kwargs)
        return dataclasses.replace(bundle, classes=[f"c{i}" for i in range(classes)])

    trainer = Trainer(cfg, progress=False)
    with mock.patch.object(trainer_module, "build_data", data):
        trainer._build()
    return trainer


def _suite_step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, warmup: int, steps: int) -> float:
    """Seconds per ``Trainer._step`` on a batch that is already there (device or pinned host memory)."""
    meter = _DeviceMeter(_empty_meter(), trainer.device)
    trainer.model.train()
    return _window(lambda i: trainer._step((x, y), 0, i, meter), trainer.device, warmup, steps)


def gpu_rows(
    case: dict, *, warmup: int, steps: int, root: Path, compile: bool = False
) -> tuple[str, list[tuple[str, float, str]]]:
    """The gpu case: a title line and rows (label, seconds per step, what the last column says).

    With ``compile`` two more rows: the bare loop and the suite step, both under ``torch.compile``
    (the suite's ``run.compile=true``), the ratio of the second to the first.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    batch, img, classes = case["batch"], case["img"], case["classes"]
    gen = torch.Generator().manual_seed(0)
    host_x = torch.randn(batch, 3, img, img, generator=gen)
    host_y = torch.randint(0, classes, (batch,), generator=gen)
    if cuda:
        host_x, host_y = host_x.pin_memory(), host_y.pin_memory()
    x, y = host_x.to(device), host_y.to(device)
    rows: list[tuple[str, float, str]] = []

    tokenmix = _built_trainer(_step_config(case, root, []), classes)
    model = build_model(case["model"], num_classes=classes, img_size=img).to(device)
    target = tokenmix.mixer(x.clone(), y, generator=torch.Generator().manual_seed(0))[1]
    amp = tokenmix.amp
    bare = _bare(model, x.clone(), target, device, amp, steps, warmup)
    del model
    rows.append(("bare forward + backward + AdamW, batch on the device", bare, "1.000"))
    on_device = _suite_step(tokenmix, x.clone(), y, warmup, steps)
    rows.append(("suite step, TokenMix (one mask per batch), batch on the device", on_device,
                 f"{bare / on_device:.3f}"))
    pinned = _suite_step(tokenmix, host_x, host_y, warmup, steps)
    rows.append(("suite step, TokenMix, batch in pinned host memory (copy included)", pinned,
                 f"{bare / pinned:.3f}"))
    mix_x = x.clone()
    mixing = _window(lambda i: tokenmix.mixer(mix_x, y, generator=torch.Generator().manual_seed(i)), device,
                     warmup, steps)
    rows.append(("TokenMix alone (host masks, device blend and targets)", mixing,
                 f"{100 * mixing / on_device:.1f} % of the step"))
    del tokenmix
    paper = _built_trainer(_step_config(case, root, [
        f"mix.groups={case['groups']}", "mix.mixup_alpha=0.8", "optim.ema_decay=0.99996", "optim.loss=bce",
        "model.drop_path=0.1",
    ]), classes)
    recipe = _suite_step(paper, x.clone(), y, warmup, steps)
    rows.append((f"suite step, paper recipe (mix.groups={case['groups']}, Mixup/TokenMix switch, EMA, BCE, "
                 "drop path 0.1), batch on the device", recipe, f"{bare / recipe:.3f}"))
    del paper
    if compile:
        model = torch.compile(build_model(case["model"], num_classes=classes, img_size=img).to(device))
        compiled_bare = _bare(model, x.clone(), target, device, amp, steps, warmup)
        del model
        rows.append(("bare loop, torch.compile", compiled_bare, f"{bare / compiled_bare:.3f}"))
        compiled = _built_trainer(_step_config(case, root, ["run.compile=true"]), classes)
        step = _suite_step(compiled, x.clone(), y, warmup, steps)
        rows.append(("suite step, TokenMix, run.compile=true (ratio to the compiled bare loop)", step,
                     f"{compiled_bare / step:.3f}"))
        del compiled
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    precision = "bf16 autocast, channels_last" if cuda else "fp32 (CPU)"
    title = (f"{case['model']}, {img} px, batch {batch}, {classes} classes, {precision}, {name}, "
             f"torch {torch.__version__}; {warmup} warmup steps, then {steps} timed steps per row")
    return title, rows


def gpu_table(title: str, rows: list[tuple[str, float, str]], batch: int) -> str:
    """The gpu case as Markdown: the title line, then one row per measurement."""
    lines = [title, "", "| step | ms/step | img/s | vs bare / share |", "|---|---:|---:|---:|"]
    for label, seconds, last in rows:
        rate = "" if label.startswith("TokenMix alone") else f"{batch / seconds:,.0f}"
        lines.append(f"| {label} | {1e3 * seconds:,.2f} | {rate} | {last} |")
    return "\n".join(lines)


def _gpu_case(args: argparse.Namespace) -> int:
    if args.dry_run:
        case, warmup, steps = dict(DRY_RUN), args.warmup or 1, args.steps or 2
    else:
        if not torch.cuda.is_available():
            print("--case gpu measures a CUDA device and none is here; --dry-run runs it in miniature",
                  file=sys.stderr)
            return 2
        case, warmup, steps = dict(CASES["gpu"]), args.warmup or 10, args.steps or 50
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        title, rows = gpu_rows(case, warmup=warmup, steps=steps, root=Path(tmp) / "runs", compile=args.compile)
    print(gpu_table(title, rows, case["batch"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), default="builtin")
    parser.add_argument("--images", type=int, default=640, help="folder cases: generated training images")
    parser.add_argument("--bare-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="gpu case: timed steps per row (default 50)")
    parser.add_argument("--warmup", type=int, default=None, help="gpu case: untimed steps first (default 10)")
    parser.add_argument("--compile", action="store_true",
                        help="run.compile=true, and torch.compile the bare loop's model too (gpu case: two more rows)")
    parser.add_argument("--dry-run", action="store_true",
                        help="gpu case: a tiny model for a few steps, on any device (numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case == "gpu":
        return _gpu_case(args)
    case = CASES[args.case]
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        data = case["data"] or [f"data={_folder(Path(tmp) / 'data', args.images)}", "data.workers=2"]
        overrides = [
            *data, f"model.name={case['model']}", f"data.img_size={case['img']}", f"data.batch_size={case['batch']}",
            "mix.method=tokenmix", "mix.mixup_alpha=0", f"mix.token_grid={case['grid']}",
            f"schedule.epochs={case['epochs']}", f"eval.every={case['epochs']}", "eval.occlusion=[]",
            "tracking.mode=disabled", f"run.output_root={tmp}/runs",
        ]
        if args.threads:
            overrides.append(f"run.threads={args.threads}")
        if args.compile:
            overrides.append("run.compile=true")
        cfg = load_config(None, overrides)
        trainer = Trainer(cfg, progress=False)
        result = trainer.fit()
        trainer.data.close()  # the run's persistent loader workers would otherwise outlive the benchmark
        rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        steady = statistics.mean(r["images_per_s"] for r in rows[1:])

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        amp = device.type == "cuda"
        bundle = build_data(cfg.data)
        model = build_model(cfg.model.name, num_classes=bundle.num_classes, img_size=cfg.data.img_size).to(device)
        mixer = build_mixer(cfg.mix, num_classes=bundle.num_classes)
        loader = iter(train_loader(bundle, cfg.data, seed=0, epoch=0, start_step=0, pin=amp))
        waits, mixes = [], []
        batches = []
        for i in range(min(6, len(bundle.train) // cfg.data.batch_size)):
            start = time.perf_counter()
            x, y = next(loader)[:2]
            waits.append(time.perf_counter() - start)
            x, y = x.to(device), y.to(device)
            start = time.perf_counter()
            mixed, target, _ = mixer(x.clone(), y, generator=torch.Generator().manual_seed(derive_seed(0, "b", i)))
            _sync(device)
            mixes.append(time.perf_counter() - start)
            batches.append((mixed, target))
        x, target = batches[0]
        bare_model = torch.compile(model) if args.compile else model
        bare = cfg.data.batch_size / _bare(bare_model, x, target, device, amp, args.bare_steps)
        name = torch.cuda.get_device_name(device) if amp else f"CPU, {torch.get_num_threads()} threads"
        batch = cfg.data.batch_size
        print(f"{args.case}: {cfg.model.name}, {cfg.data.img_size} px, batch {batch}, TokenMix, {name}, "
              f"torch {torch.__version__}{', torch.compile (both loops)' if args.compile else ''}")
        print("| loop | img/s | ratio |")
        print("|---|---:|---:|")
        print(f"| suite train (epochs 2..{case['epochs']}, loading+mixing+records) | {steady:.0f} | "
              f"{steady / bare:.3f} |")
        print(f"| bare forward+backward+step, batch in memory | {bare:.0f} | 1.000 |")
        step_ms = 1e3 * batch / bare
        wait_ms = 1e3 * statistics.median(waits[1:] or waits)
        mix_ms = 1e3 * statistics.median(mixes)
        print(f"per step: optimiser step {step_ms:.1f} ms, mixing {mix_ms:.2f} ms, loading wait when not overlapped "
              f"{wait_ms:.1f} ms (median of {len(waits)} batches, loader alone)")
        del loader
        bundle.close()  # its persistent loader workers would otherwise outlive the benchmark
    return 0


if __name__ == "__main__":
    sys.exit(main())
