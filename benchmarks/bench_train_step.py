"""Training-step throughput and the share of it spent mixing.

Times a full optimiser step (forward, backward, AdamW) of a timm model on one batch, with and
without each mixing method applied first, on the current device (bf16 autocast on CUDA).

    .venv/bin/python benchmarks/bench_train_step.py --model vit_micro_patch4_32 --img 32 --batch 128
    .venv/bin/python benchmarks/bench_train_step.py --model deit_small_patch16_224 --img 224 --batch 128  # GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import suite  # noqa: F401 - torchvision shim before timm
from suite.config import MixConfig
from suite.mixing.mixer import build_mixer
from suite.models.factory import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    for _ in range(2):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_micro_patch4_32")
    parser.add_argument("--img", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--grid", type=int, default=None, help="TokenMix grid (default: img/patch)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"
    model = build_model(args.model, num_classes=1000 if args.img >= 128 else 10, img_size=args.img).to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    num_classes = model.num_classes
    x0 = torch.randn(args.batch, 3, args.img, args.img, device=device)
    y0 = torch.randint(0, num_classes, (args.batch,), device=device)
    grid = args.grid or args.img // 16 if args.img >= 128 else args.grid or args.img // 4

    def step(x: torch.Tensor, target: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x.contiguous(memory_format=torch.channels_last) if amp else x)
        loss = torch.sum(-target * torch.log_softmax(logits.float(), -1), -1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = []
    methods = {
        "none": MixConfig(method="none"),
        "cutmix (timm)": MixConfig(method="cutmix", mixup_alpha=0.0),
        "tokenmix area, per-sample": MixConfig(method="tokenmix", mixup_alpha=0.0, per_sample=True, target="area",
                                               token_grid=grid),
    }
    for label, cfg in methods.items():
        mixer = build_mixer(cfg, num_classes=num_classes)
        gen = torch.Generator().manual_seed(0)

        def mix_only() -> None:
            mixer(x0.clone(), y0, generator=gen)

        def full() -> None:
            x, target, _ = mixer(x0.clone(), y0, generator=gen)
            step(x, target)

        t_mix = _time(mix_only, device, args.repeats)
        t_full = _time(full, device, args.repeats)
        rows.append((label, t_full * 1e3, args.batch / t_full, t_mix * 1e3))
    name = torch.cuda.get_device_name(device) if amp else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, batch {args.batch}, {args.img} px, {name}, torch {torch.__version__}")
    print("| mixing | step ms | img/s | mixing+clone ms | share of step |")
    print("|---|---|---|---|---|")
    for label, ms, ips, mix_ms in rows:
        print(f"| {label} | {ms:.1f} | {ips:.0f} | {mix_ms:.2f} | {100 * mix_ms / ms:.1f} % |")


if __name__ == "__main__":
    main()
