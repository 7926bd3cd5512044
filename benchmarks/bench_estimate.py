"""Cost estimates against measured wall time, per run of the demo sweeps.

For each sweep (default: the demo's methods and teacher sweeps, which hold every kind of run:
no teacher, an online teacher, offline maps, the teacher's own training and the maps build):

1. ``before``: the estimate ``suite sweep plan`` shows before anything ran (the CPU table);
2. the sweep is launched as ``make demo`` launches it (local executor, its runs two at a time,
   one thread each on the 2-core machine), into a fresh output root;
3. ``measured``: each run's wall time from its own records, ``setup_seconds`` (from the suite's
   import in the run's process to its first step) + ``wall_seconds`` (first step to the
   summary), the same two fields for a maps build step;
4. ``calibrated``: the estimate of each run from the *other* finished runs only (a copy of the
   output root without it: leave-one-out), i.e. what the plan says for a run not yet trained
   once others of its model have finished.

Prints one Markdown table per sweep (estimate / measured per run, the ratio) and the largest
deviation of each estimate. ``--reuse DIR`` skips the launch and reads a finished output root.

    .venv/bin/python benchmarks/bench_estimate.py                    # methods + teacher, ~5 min
    .venv/bin/python benchmarks/bench_estimate.py --sweeps methods   # one sweep
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import suite  # noqa: E402,F401 - torchvision shim before timm

from sweeps.estimate import estimate  # noqa: E402
from sweeps.expand import expand  # noqa: E402
from sweeps.spec import load_sweep  # noqa: E402

DEMO = REPO / "sweeps" / "demo"


def measured_seconds(run_dir: Path) -> float | None:
    """A finished run's wall time from its records (setup + training sessions), or None."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())  # training runs and maps builds both record these two
    return float(summary["wall_seconds"]) + float(summary.get("setup_seconds") or 0.0)


def leave_one_out(file: Path, root: Path, run_id: str) -> float | None:
    """The estimate of ``run_id`` (seconds) from the finished runs under ``root`` other than itself."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for folder in root.iterdir():
            if folder.is_dir() and folder.name != run_id and (folder / "summary.json").is_file():
                (copy / folder.name).mkdir()
                for name in ("config.json", "summary.json"):
                    if (folder / name).is_file():
                        shutil.copy(folder / name, copy / folder.name / name)
        plan = expand(load_sweep(file, output_root=copy), check_paths=False)
        hours = estimate(plan).hours.get(run_id)
        return None if hours is None else hours * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", nargs="+", default=["methods", "teacher"])
    parser.add_argument("--reuse", type=Path, default=None, help="read this finished output root, launch nothing")
    args = parser.parse_args()
    root = args.reuse or Path(tempfile.mkdtemp(prefix="bench-estimate-")) / "runs"
    files = [DEMO / f"{name}.yaml" for name in args.sweeps]
    before = {}
    empty = Path(tempfile.mkdtemp(prefix="bench-estimate-empty-"))  # nothing finished: the plan before any run
    for file in files:
        plan = expand(load_sweep(file, output_root=empty), check_paths=False)
        est = estimate(plan)
        before.update({run_id: (h * 3600 if h is not None else None) for run_id, h in est.hours.items()})
    if args.reuse is None:
        from jobs.launch import launch

        for file in files:
            launch(load_sweep(file, output_root=root), executor="local", echo=lambda line: None)
    print(f"Machine: {platform.processor() or platform.machine()}, {date.today()}, output root {root}\n")
    worst = {"before": 0.0, "calibrated": 0.0}
    seen: set[str] = set()
    for file in files:
        plan = expand(load_sweep(file, output_root=root), check_paths=False)
        print(f"### {file.stem}\n")
        print("| run | before s | measured s | before / measured | calibrated s | calibrated / measured |")
        print("|---|---:|---:|---:|---:|---:|")
        for run in plan.all_runs():
            if run.run_id in seen:
                continue
            seen.add(run.run_id)
            real = measured_seconds(root / run.run_id)
            first, loo = before.get(run.run_id), leave_one_out(file, root, run.run_id)
            cells = []
            for value in (first, loo):
                ratio = value / real if value is not None and real else None
                cells += [f"{value:.1f}" if value is not None else "?", f"{ratio:.2f}" if ratio else "?"]
            for key, value in (("before", first), ("calibrated", loo)):
                if value is not None and real:
                    worst[key] = max(worst[key], abs(value / real - 1))
            label = f"{run.label()} [{run.kind}]" if run.kind != "train" else run.label()
            print(f"| {label} | {cells[0]} | {real or 0:.1f} | {cells[1]} | {cells[2]} | {cells[3]} |")
        print()
    print(f"Largest deviation: before {100 * worst['before']:.0f} %, calibrated {100 * worst['calibrated']:.0f} %")


if __name__ == "__main__":
    main()
