"""Cost of ``suite report`` over 10,000 run directories (each with a 100-epoch metrics file).

Generates a grid sweep (mask ratio × mixing probability, 10 × 10 conditions, 100 seeds) and
writes every run directory as the trainer leaves it: the resolved ``config.json``, a
100-line ``metrics.jsonl`` and ``summary.json``. Then times the report (collect + every table
in md, tex, csv, and png) in three states:

- **cold**: no cache at all (the sweep is expanded and validated, every record parsed);
- **records cold**: the expanded plan is cached, every run record is parsed;
- **warm**: nothing changed since the last report (plan and records from the caches).

Usage::

    .venv/bin/python benchmarks/bench_report.py [--root DIR] [--repeat 3]

Prints a Markdown table of seconds (median of the repeats) and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import suite  # noqa: E402,F401 - torchvision shim
from analysis._plan import PLAN_CACHE, plan_sweep  # noqa: E402
from analysis._records import CACHE_NAME, ROWS_NAME  # noqa: E402
from analysis.report import collect, write_report  # noqa: E402
from suite.run.records import RunPaths  # noqa: E402

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
PROBS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
EPOCHS = 100


def generate(root: Path, seeds: int) -> Path:
    """Write the sweep file and its run directories below ``root`` (reused if complete)."""
    sweep = root / "bench.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "bench-report",
        "base": {"overrides": {"data": "builtin", "mix.method": "tokenmix", "schedule.epochs": EPOCHS,
                               "tracking.mode": "disabled"}},
        "axes": {"mix.mask_ratio": RATIOS, "mix.prob": PROBS},
        "seeds": list(range(seeds)),
        "output_root": str(root / "runs"),
    }))
    marker = root / "generated"
    if marker.is_file():
        return sweep
    from sweeps.expand import expand
    from sweeps.spec import load_sweep

    plan = expand(load_sweep(sweep), check_paths=False)
    rng = np.random.default_rng(0)
    for run in plan.runs:
        paths = RunPaths.of(plan.sweep.output_root, run.run_id)
        paths.root.mkdir(parents=True, exist_ok=True)
        config = {**json.loads(run.config.model_dump_json()), "run_id": run.run_id}
        paths.config.write_text(json.dumps(config, indent=2, sort_keys=True))
        final = 50 + 10 * run.values["mix.mask_ratio"] + 3 * run.values["mix.prob"] + rng.normal(0, 1)
        curve = final * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 20)) / (1 - np.exp(-EPOCHS / 20))
        lines = []
        for epoch, top1 in enumerate(curve, start=1):
            row = {"epoch": epoch, "train_loss": 2.3 * np.exp(-epoch / 40), "lr": 1e-3, "images_per_s": 900.0,
                   "epoch_seconds": 3.1, "tokenmix_fallbacks": 0, "top1": float(top1), "top5": 99.0,
                   "val_loss": 1.1, "wall_time": 3.1 * epoch}
            lines.append(json.dumps(row, sort_keys=True))
        paths.metrics.write_text("\n".join(lines) + "\n")
        summary = {"run_id": run.run_id, "status": "finished", "top1": float(curve[-1]), "top5": 99.0,
                   "best_top1": float(curve.max()), "best_top1_max": float(curve.max()), "epochs": EPOCHS,
                   "occ50_top1": float(curve[-1]) - 20, "gpu_hours": 0.08, "wall_seconds": 310.0,
                   "images_per_s": 900.0, "device": "cuda"}
        paths.summary.write_text(json.dumps(summary, indent=2, sort_keys=True))
    marker.touch()
    return sweep


def report_once(sweep: Path, out: Path, *, all_curves: bool) -> tuple[float, float, float, int]:
    start = time.perf_counter()
    plan_sweep(sweep)
    planned = time.perf_counter()
    collection = collect([sweep], all_curves=all_curves)
    mid = time.perf_counter()
    write_report(collection, out, formats=("md", "tex", "csv", "png"))
    return planned - start, mid - planned, time.perf_counter() - mid, len(collection.frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="where to generate (default: a temp folder)")
    parser.add_argument("--seeds", type=int, default=100, help="seeds per condition (100 conditions)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-report-"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sweep = generate(root, args.seeds)
    print(f"generated {root} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    runs_root = root / "runs"
    states = ("cold", "records cold", "warm")
    results: dict[tuple[str, bool], list[tuple[float, ...]]] = {}
    count = 0
    for all_curves in (False, True):
        for _ in range(args.repeat):
            for state in states:
                if state == "cold":
                    (runs_root / PLAN_CACHE).unlink(missing_ok=True)
                if state in ("cold", "records cold"):
                    (runs_root / CACHE_NAME).unlink(missing_ok=True)
                    (runs_root / ROWS_NAME).unlink(missing_ok=True)
                *times, count = report_once(sweep, root / "report", all_curves=all_curves)
                results.setdefault((state, all_curves), []).append(tuple(times))
    print(f"Report over {count:,} run directories ({EPOCHS}-epoch metrics each), median of {args.repeat}:\n")
    print("| state | metrics.jsonl read | plan s | collect s | write s (md, tex, csv, png) | total s |")
    print("|---|---|---:|---:|---:|---:|")
    for (state, all_curves), values in results.items():
        p, c, w = (statistics.median(v[i] for v in values) for i in range(3))
        t = statistics.median(sum(v) for v in values)
        read = "all 10,000 (all_curves)" if all_curves else "none (no curve plot for 100 rows)"
        print(f"| {state} | {read} | {p:.2f} | {c:.2f} | {w:.2f} | {t:.2f} |")
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")


if __name__ == "__main__":
    main()
