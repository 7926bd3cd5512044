"""Client-side cost of planning and submitting a large sweep.

Plans a sweep of N tiny runs (one seed axis) and launches it on SLURM through the suite's real
code path (validation, ``sinfo`` resource check, ``sbatch --test-only``, submitit pickles, job
arrays split under ``MaxArraySize``). ``sbatch`` is replaced by a counting wrapper on ``PATH``:

- ``--mode cluster`` (default when the cluster answers): the wrapper forwards to the real
  ``sbatch`` with ``--hold``, so the arrays are really queued by the local cluster, then
  cancelled; nothing trains;
- ``--mode fake``: the wrapper answers ``Submitted batch job N`` itself (no cluster needed
  for ``sbatch``; ``sinfo``/``scontrol`` must still answer).

Usage::

    .venv/bin/python benchmarks/bench_dispatch.py --runs 1000 2500

Prints a Markdown table: runs, arrays, sbatch calls, seconds to plan and to launch.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model  # noqa: E402

WRAPPER = """#!/bin/bash
# Counting stand-in for sbatch: one line per call in {log}.
echo "$*" >> "{log}"
if [ "{mode}" = "fake" ]; then
  if [ "$1" = "--test-only" ]; then echo "sbatch: Job 1 to start now" >&2; exit 0; fi
  echo "Submitted batch job $(( 800000 + $(wc -l < "{log}") ))"; exit 0
fi
if [ "$1" = "--test-only" ]; then exec "{real}" "$@"; fi
exec "{real}" --hold "$@"
"""

SACCT_WRAPPER = """#!/bin/bash
echo "$*" >> "{log}"
exec "{real}" "$@"
"""

TINY = {
    "data": "builtin",
    "data.train_size": 256,
    "data.val_size": 128,
    "data.batch_size": 32,
    "model.depth": 1,
    "model.embed_dim": 48,
    "schedule.epochs": 1,
    "eval.occlusion": [],
    "tracking.mode": "disabled",
}


def _cancel(state_file: Path) -> None:
    """Cancel the held arrays a cluster-mode launch queued."""
    from jobs.sweep_state import SweepState

    state = SweepState.read(state_file)
    ids = sorted({e.job_id.split("_")[0] for e in state.runs.values() if e.job_id}) if state else []
    if ids:
        subprocess.run(["scancel", *ids], check=False)


def _time_cli(sweep_file: Path, bin_dir: Path) -> dict[str, float]:
    """Wall time of the commands a user types (Python start-up and imports included)."""
    suite_cli = str(Path(sys.executable).parent / "suite")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = {}
    for key, args in (("cli_plan_s", ["plan", "--json"]), ("cli_launch_s", ["launch", "-e", "slurm"])):
        start = time.perf_counter()
        done = subprocess.run(
            [
                suite_cli,
                "sweep",
                args[0],
                str(sweep_file),
                *args[1:],
                "--output-root",
                str(sweep_file.parent / "cli-runs"),
            ],
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        out[key] = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(
                f"suite sweep {args[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
    return out


def bench(runs: int, mode: str, workdir: Path, *, with_cli: bool = False) -> dict[str, float | int]:
    """Plan and launch one sweep of ``runs`` runs; returns the measurements."""
    from jobs.launch import launch
    from jobs.sweep_state import SweepState
    from jobs.status_report import collect
    from sweeps.expand import expand
    from sweeps.spec import load_sweep

    folder = workdir / f"sweep-{runs}"
    folder.mkdir()
    bin_dir, log = folder / "bin", folder / "sbatch-calls.log"
    bin_dir.mkdir()
    real = shutil.which("sbatch") or "sbatch"
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(WRAPPER.format(log=log, mode=mode, real=real))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    sacct_log = folder / "sacct-calls.log"
    sacct = bin_dir / "sacct"
    sacct.write_text(SACCT_WRAPPER.format(log=sacct_log, real=shutil.which("sacct") or "sacct"))
    sacct.chmod(sacct.stat().st_mode | stat.S_IEXEC)
    sweep_file = folder / "sweep.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": f"bench-{runs}",
                "base": {"overrides": TINY},
                "seeds": list(range(runs)),
                "output_root": str(folder / "runs"),
                "resources": {"gpus_per_node": 1, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10},
            }
        )
    )
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
    try:
        start = time.perf_counter()
        plan = expand(load_sweep(sweep_file), check_paths=True)
        plan_s = time.perf_counter() - start
        start = time.perf_counter()
        report = launch(load_sweep(sweep_file), executor="slurm")
        launch_s = time.perf_counter() - start
        sacct_log.unlink(missing_ok=True)
        start = time.perf_counter()
        status = collect(SweepState.read(load_sweep(sweep_file).state_file))
        status_s = time.perf_counter() - start
        sacct_calls = len(sacct_log.read_text().splitlines()) if sacct_log.exists() else 0
    finally:
        os.environ["PATH"] = old_path
    calls = log.read_text().splitlines() if log.exists() else []
    cli = _time_cli(sweep_file, bin_dir) if with_cli else {}
    if mode == "cluster":
        _cancel(load_sweep(sweep_file).state_file)
        _cancel(folder / "cli-runs" / "sweep-state.json")
    return {
        **cli,
        "runs": len(plan.runs),
        "arrays": report.sbatch_calls,
        "submit_calls": sum(1 for c in calls if not c.startswith("--test-only")),
        "test_only_calls": sum(1 for c in calls if c.startswith("--test-only")),
        "plan_s": plan_s,
        "check_s": report.check_seconds,
        "submit_s": report.submit_seconds,
        "launch_s": launch_s,
        "largest_index": max(a["size"] for a in report.arrays) - 1,
        "status_s": status_s,
        "sacct_calls": sacct_calls,
        "status_runs": sum(status.counts.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000])
    parser.add_argument("--mode", choices=["cluster", "fake"], default=None)
    args = parser.parse_args()
    import suite  # noqa: F401 - torchvision shim, and the import cost is not part of the measurement
    from jobs import slurm

    mode = args.mode or ("cluster" if slurm.available() else "fake")
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; python {platform.python_version()}; mode {mode}; "
        f"MaxArraySize {slurm.max_array_size()}"
    )
    print()
    print(
        "| runs | arrays | sbatch submit calls | sbatch --test-only | largest task index | plan s | launch s "
        "(check + submit) | status s (sacct calls) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    cli_rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        for i, runs in enumerate(args.runs):
            r = bench(runs, mode, Path(tmp), with_cli=i == 0)
            print(
                f"| {r['runs']:,} | {r['arrays']} | {r['submit_calls']} | {r['test_only_calls']} | "
                f"{r['largest_index']} | {r['plan_s']:.2f} | {r['launch_s']:.2f} "
                f"({r['check_s']:.2f} + {r['submit_s']:.2f}) | {r['status_s']:.2f} ({r['sacct_calls']}) |"
            )
            if "cli_plan_s" in r:
                cli_rows.append(r)
    for r in cli_rows:
        print()
        print(
            f"command line, {r['runs']:,} runs, Python start-up and imports included: "
            f"`suite sweep plan --json` {r['cli_plan_s']:.2f} s, `suite sweep launch -e slurm` {r['cli_launch_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
