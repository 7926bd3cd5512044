"""Per-step cost of offline teacher maps: gather a batch's stored maps and cut them to the crops.

    .venv/bin/python benchmarks/bench_offline_maps.py --batch 256 --map 18 --grid 14 --count 100000

Times ``OfflineMaps.maps`` (memory-mapped float16 gather of random indices, copy to the device,
``crop_maps``) on a synthetic maps file, against the online teacher's CAM on the same batch
(``--teacher resnet18`` at ``--img`` px; skipped with ``--teacher none``).
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
from suite.teacher.offline import FORMAT, MAPS_FILE, META_FILE, OfflineMaps


def _median_ms(fn, repeats: int, device: torch.device) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--map", type=int, default=18, help="stored map side (e.g. 18 for 576 px / 32)")
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--count", type=int, default=100_000, help="maps in the synthetic file")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--teacher", default="resnet18")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        array = np.lib.format.open_memmap(
            directory / MAPS_FILE, mode="w+", dtype=np.float16, shape=(args.count, args.map, args.map)
        )
        array[:] = np.random.default_rng(0).random(array.shape, dtype=np.float32).astype(np.float16)
        array.flush()
        del array
        meta = {"format": FORMAT, "count": args.count, "num_classes": 1000, "fingerprint": "bench"}
        (directory / META_FILE).write_text(json.dumps(meta))
        maps = OfflineMaps.open(directory, fingerprint="bench", num_classes=1000)
        x = torch.empty(args.batch, 3, 1, 1, device=device)

        def offline() -> torch.Tensor:
            where = torch.rand(args.batch, 6, generator=gen, dtype=torch.float64)
            where[:, 0] = torch.randint(args.count, (args.batch,), generator=gen).double()
            where[:, 1:3] *= 0.5
            where[:, 3:5] = where[:, 1:3] + 0.5
            where[:, 5] = where[:, 5].round()
            return maps.maps(x, torch.zeros(args.batch, dtype=torch.long), args.grid, geometry=where)

        rows = [(f"offline maps: gather {args.batch} of {args.map}x{args.map} + crop to {args.grid}x{args.grid}",
                 _median_ms(offline, args.repeats, device))]
        if args.teacher != "none":
            import timm

            from suite.teacher.cam import Teacher

            teacher = Teacher.from_module(timm.create_model(args.teacher, num_classes=1000).to(device))
            images = torch.randn(args.batch, 3, args.img, args.img, device=device)
            labels = torch.randint(1000, (args.batch,), device=device)
            rows.append((f"online teacher CAM: {args.teacher} at {args.img} px",
                         _median_ms(lambda: teacher.maps(images, labels, args.grid), max(2, args.repeats // 10), device)))
    print(f"torch {torch.__version__}, device {device}, {args.threads} threads\n")
    print("| per training step | median ms |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
