"""Cost of batch mixing: TokenMix against timm's Mixup/CutMix on the same batch.

Times (median over ``--repeats`` rounds, methods interleaved round-robin so that a change of machine
load hits every method alike) on one random batch:

* timm ``Mixup`` in CutMix batch mode (``mixup_alpha=0, cutmix_alpha=1, prob=1, switch_prob=0,
  mode='batch', label_smoothing=0.1``) and in Mixup mode (``mixup_alpha=0.8``, same otherwise);
* ``x.clone()`` and ``x.flip(0)`` as references for one pass over the batch;
* ``TokenMix`` (block masks, 112/196-equivalent ratio) with one mask per batch and per sample, with
  ``area`` and ``teacher_raw`` targets; teacher maps are precomputed, so teacher time is excluded
  here and reported on its own row (a timm ``resnet18`` CAM at the same resolution);
* the whole DeiT switch of ``mix.method=tokenmix`` with ``mix.groups`` (``BatchMixer``: each group draws
  Mixup or TokenMix; ``--groups``);
* mask generation alone (per-sample and per-batch block masks).

timm's ``Mixup`` and ``TokenMix`` both overwrite their input, so every method gets a fresh copy of
the batch, written into one preallocated buffer *outside* the timed region (the reference rows
too, for consistency).

Run: ``python benchmarks/bench_mixing.py --batch 256 --img 224 --grid 14 --repeats 15 --threads 2``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import suite  # noqa: F401 - torchvision shim before timm
from suite.config import MixConfig
from suite.mixing.mixer import BatchMixer
from suite.teacher.cam import Teacher
from suite.mixing.masks import token_masks
from suite.mixing.tokenmix import TokenMix


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time_round_robin(
    methods: dict[str, Callable[[torch.Tensor], object]], x0: torch.Tensor, repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call for each method; each call gets a fresh copy of ``x0`` made untimed.

    The copy goes into one preallocated buffer, as a training step's batch would already exist;
    memory a method allocates itself (e.g. timm's ``x.flip(0)``) is part of its time.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    x = torch.empty_like(x0)
    for r in range(warmup + repeats):
        for name, fn in methods.items():
            x.copy_(x0)
            start = time.perf_counter()
            fn(x)
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def _time_plain(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    out = []
    for r in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        if r >= warmup:
            out.append(time.perf_counter() - start)
    return out


def run_case(
    batch: int, img: int, grid: int, repeats: int, cam_repeats: int, seed: int, groups: int = 0
) -> list[tuple[str, float, int]]:
    """Benchmark one (batch, image size, grid) case; returns ``(row, median ms, repeats)`` rows."""
    from timm.data import Mixup

    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, 3, img, img, generator=gen)
    y = torch.randint(0, 1000, (batch,), generator=gen)
    maps = torch.rand(batch, grid, grid, generator=gen)
    maps /= maps.sum((1, 2), keepdim=True)
    ratio = round(4 / 7 * grid * grid) / (grid * grid)  # 112 of 196 at G = 14
    common = dict(prob=1.0, switch_prob=0.0, mode="batch", label_smoothing=0.1, num_classes=1000)
    cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, **common)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, **common)

    def tokenmix(per_sample: bool, target: str) -> Callable[[torch.Tensor], object]:
        mix = TokenMix(
            num_classes=1000, mask_ratio=ratio, token_grid=grid, per_sample=per_sample, target=target
        )
        return lambda x: mix(x, y, maps=maps if target != "area" else None, generator=gen)

    methods: dict[str, Callable[[torch.Tensor], object]] = {
        "timm CutMix (batch mode)": lambda x: cutmix(x, y),
        "timm Mixup (batch mode)": lambda x: mixup(x, y),
        "x.clone()": lambda x: x.clone(),
        "x.flip(0)": lambda x: x.flip(0),
        "TokenMix per-batch mask, area target": tokenmix(False, "area"),
        "TokenMix per-batch mask, teacher_raw target": tokenmix(False, "teacher_raw"),
        "TokenMix per-sample masks, area target": tokenmix(True, "area"),
        "TokenMix per-sample masks, teacher_raw target": tokenmix(True, "teacher_raw"),
    }
    if groups and batch % groups == 0 and groups % 2 == 0 and groups < batch:
        switch = BatchMixer(
            MixConfig(method="tokenmix", groups=groups, token_grid=grid, mask_ratio=ratio, target="area"),
            num_classes=1000,
        )
        methods[f"DeiT switch in groups of {groups} (Mixup 0.8 or TokenMix per group), area target"] = (
            lambda x: switch(x, y, generator=gen)
        )
    times = _time_round_robin(methods, x0, repeats)
    rows = [(name, statistics.median(t) * 1e3, len(t)) for name, t in times.items()]
    for per_sample, label in ((True, f"{batch} per-sample"), (False, "1 per-batch")):
        t = _time_plain(
            lambda p=per_sample: token_masks(batch, grid, ratio, per_sample=p, generator=gen),
            max(repeats, 50),
        )
        rows.append((f"mask generation only: {label} block masks", statistics.median(t) * 1e3, len(t)))
    import timm

    teacher = Teacher.from_module(timm.create_model("resnet18", num_classes=1000))
    t = _time_plain(lambda: teacher.maps(x0, y, grid), cam_repeats)
    rows.append(
        ("teacher CAM, timm resnet18 (separate, not in rows above)", statistics.median(t) * 1e3, len(t))
    )
    return rows


def _table(rows: list[tuple[str, float, int]]) -> str:
    ref = dict((name, ms) for name, ms, _ in rows)["timm CutMix (batch mode)"]
    lines = ["| method | median ms | × timm CutMix | runs |", "|---|---:|---:|---:|"]
    for name, ms, n in rows:
        lines.append(f"| {name} | {ms:.2f} | {ms / ref:.2f} | {n} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per method")
    parser.add_argument("--cam-repeats", type=int, default=3, help="timed teacher CAM calls (slow on CPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--groups", type=int, default=32, help="group size of the mix.groups switch row; 0 to skip")
    parser.add_argument(
        "--small", type=str, default="128,32,8", help="second case 'batch,img,grid'; empty to skip"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {_cpu_model()}, "
        f"CUDA available: {torch.cuda.is_available()}"
    )
    cases = [(args.batch, args.img, args.grid)]
    if args.small:
        b, i, g = (int(v) for v in args.small.split(","))
        cases.append((b, i, g))
    for batch, img, grid in cases:
        rows = run_case(batch, img, grid, args.repeats, args.cam_repeats, args.seed, args.groups)
        print(f"\n### B={batch}, {img}x{img} px, token grid {grid}x{grid}\n")
        print(_table(rows))


if __name__ == "__main__":
    main()
