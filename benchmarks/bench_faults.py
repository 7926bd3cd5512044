"""Faults injected into real trainings, and what survived them.

Trains a tiny reference run, then for each of ``--runs`` fresh runs (same config, own output
root) kills ``suite train`` ``--faults`` times at random points (SIGKILL to the process group,
SIGTERM, Ctrl-C twice, SIGTERM to the group as ``scancel`` does; chosen in turn), runs the command
once more to the end, and checks: the run finished, its metrics equal the reference's, W&B's
offline history equals ``metrics.jsonl``, no attempt was ever recorded as failed.

    .venv/bin/python benchmarks/bench_faults.py --runs 3 --faults 4

Prints one Markdown table (the one in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import suite  # noqa: E402,F401 - torchvision shim before timm
from suite.config import load_config  # noqa: E402
from suite.run.records import RunState, read_run  # noqa: E402
from suite.train.trainer import train  # noqa: E402
from tests.helpers import wandb_history  # noqa: E402

TINY = ["data.train_size=256", "data.val_size=128", "data.batch_size=32", "model.depth=1", "model.embed_dim=48",
        "schedule.epochs=3", "schedule.warmup_epochs=0.5", "eval.batch_size=128", "eval.occlusion=[]",
        "run.threads=1"]
FAULTS = [("SIGKILL", True, 1), ("SIGTERM", False, 1), ("SIGINT", True, 2), ("SIGTERM", True, 1)]
COMPARED = ("top1", "top5", "val_loss", "best_top1")


def _env(delay_s: float) -> dict[str, str]:
    hook = REPO / "tests" / "faults_hook"
    return {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{REPO}", "FAULT_STEP_DELAY_S": str(delay_s),
            "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--faults", type=int, default=4, help="faults per run before it is finished")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    reference = train(load_config(None, [*TINY, "tracking.mode=disabled", f"run.output_root={work / 'ref'}"]))
    counts = {name: 0 for name, _, _ in FAULTS}
    injected = identical = wandb_equal = failed_seen = lost = 0
    start = time.perf_counter()
    for run in range(args.runs):
        root = work / f"run{run}"
        cmd = [sys.executable, "-m", "suite.cli", "train", *TINY, "tracking.mode=offline",
               "tracking.system_metrics=false", f"run.output_root={root}"]
        run_dir = root / reference.run_id
        for k in range(args.faults):
            name, group, times = FAULTS[(run + k) % len(FAULTS)]
            before = _size(run_dir / "train.log")
            proc = subprocess.Popen(cmd, env=_env(0.08), cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            while _size(run_dir / "train.log") <= before and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.2, 2.5))
            for _ in range(times):
                (os.killpg(proc.pid, getattr(signal, name)) if group else proc.send_signal(getattr(signal, name)))
                time.sleep(0.15)
            proc.wait()
            injected += 1
            counts[name] += 1
            failed_seen += read_run(run_dir).state is RunState.FAILED
        subprocess.run(cmd, env=_env(0.0), cwd=REPO, capture_output=True, check=True)
        record = read_run(run_dir)
        same = record.state is RunState.FINISHED and all(record.summary[k] == reference.summary[k] for k in COMPARED)
        identical += same
        history = wandb_history(run_dir)
        wandb_equal += sorted(history) == [r["epoch"] for r in record.metrics] and all(
            {k: history[r["epoch"]].get(k) for k in r} == r for r in record.metrics
        )
        lost += len(read_run(reference.run_dir).metrics) - len(record.metrics)
    seconds = time.perf_counter() - start
    print("| runs | faults injected | runs finished with identical metrics | W&B history == metrics.jsonl "
          "| attempts seen as failed | records lost |")
    print("|---:|---|---:|---:|---:|---:|")
    detail = ", ".join(f"{n} {name}{' x2' if name == 'SIGINT' else ''}" for name, n in counts.items())
    print(f"| {args.runs} | {injected} ({detail}) | {identical}/{args.runs} | {wandb_equal}/{args.runs} "
          f"| {failed_seen} | {lost} |")
    print(f"\n{seconds:.0f} s in all; work folder {work}")


if __name__ == "__main__":
    main()
