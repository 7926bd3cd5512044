"""Throughput of the whole training loop against a bare loop of the same model.

``suite train`` (the real :class:`suite.trainer.Trainer`: data loading, mixing, device-side
running totals, per-epoch evaluation excluded, checkpoint and records included) is timed from
its own ``metrics.jsonl`` rows (``images_per_s`` of the epochs after the first). The bare loop
runs only forward, backward and the optimiser step of the same model on one batch held in
memory. For the ImageFolder case the time of one step is split into loading wait, mixing and the
optimiser step, measured separately on the same batches.

    .venv/bin/python benchmarks/bench_trainer.py --case builtin     # vit_micro 32 px, batch 128, TokenMix
    .venv/bin/python benchmarks/bench_trainer.py --case folder      # deit_tiny 224 px, batch 64, TokenMix
    .venv/bin/python benchmarks/bench_trainer.py --case gpu         # deit_small 224 px, batch 256, bf16 (CUDA)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import suite  # noqa: F401 - torchvision shim before timm
from suite.config import load_config
from suite.data import build_data, derive_seed, train_loader
from suite.mixing import build_mixer
from suite.models import build_model
from suite.trainer import _loss_fn, train

CASES = {
    "builtin": dict(model="vit_micro_patch4_32", img=32, batch=128, grid=8, epochs=4,
                    data=["data=builtin", "data.train_size=6016", "data.val_size=256"]),
    "folder": dict(model="deit_tiny_patch16_224", img=224, batch=64, grid=14, epochs=2, data=None),
    "gpu": dict(model="deit_small_patch16_224", img=224, batch=256, grid=14, epochs=2, data=None),
}


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


def _bare(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, device: torch.device, amp: bool,
          steps: int) -> float:
    """Images/s of forward + backward + AdamW on one batch held in memory."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = _loss_fn("soft_ce")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = loss_fn(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), default="builtin")
    parser.add_argument("--images", type=int, default=640, help="folder cases: generated training images")
    parser.add_argument("--bare-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    case = CASES[args.case]
    if args.threads:
        torch.set_num_threads(args.threads)
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
        cfg = load_config(None, overrides)
        result = train(cfg, progress=False)
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
        bare = _bare(model, x, target, device, amp, args.bare_steps)
        name = torch.cuda.get_device_name(device) if amp else f"CPU, {torch.get_num_threads()} threads"
        batch = cfg.data.batch_size
        print(f"{args.case}: {cfg.model.name}, {cfg.data.img_size} px, batch {batch}, TokenMix, {name}, "
              f"torch {torch.__version__}")
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


if __name__ == "__main__":
    main()
