"""The study storage at scale: many local workers asking and telling trials of a trivial objective.

Each worker is a process running the suite's real trial hand-out (``TuneWorker._next_trial``:
the ask lock in the study folder, failing stale trials, counting trials by state, ``ask``), then
the storage writes a real trial makes (``suggest_*`` of the space, the ``run_id``/``run_dir``/
``values`` user attributes, one heartbeat) and ``tell`` with a value computed at once: no
training, so everything measured is the storage, the hand-out and Optuna's bookkeeping.

Measured per window of trials (by trial number), over the study's life:

- ``ask``: what a worker waits for its next trial (``_next_trial``, ask lock included);
- ``hold``: the time the ask lock is held (the serial part: at most ``1 / hold`` trials can start
  per second, however many workers there are);
- ``suggest`` and ``tell``: the storage writes of a trial outside the lock;
- throughput of the window (trials finished per second by all workers).

Checked at the end: every trial handed to exactly one worker (``handed_twice``), no parameter set
given to two trials (``dup_params``: the space is continuous, so a repeat means a trial handed out
twice), the study holding exactly ``--trials`` complete trials and nothing running, failed or
waiting (``lost``), and the time a new process takes to open the finished study.

Usage::

    .venv/bin/python benchmarks/bench_tune_scale.py --storage journal sqlite --workers 64 --trials 10000
    .venv/bin/python benchmarks/bench_tune_scale.py --storage journal --workers 8 --trials 500   # quick

Prints Markdown tables and writes ``result-<storage>.json`` in ``--out`` (default a folder under
/tmp; each run starts a fresh study there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model  # noqa: E402

STUDY = """name: scale
base: {base}
space:
  mix.mask_ratio: {{type: float, low: 0.1, high: 0.9}}
  mix.prob: {{type: float, low: 0.0, high: 1.0}}
  optim.lr: {{type: float, low: 1.0e-5, high: 1.0e-2, log: true}}
objective: {{metric: best_top1, direction: maximize}}
n_trials: {trials}
sampler: {{name: {sampler}, seed: 0}}
pruner: none
storage: {storage}
workers: {workers}
heartbeat_s: 60
"""


def _load(folder: Path, kind: str, trials: int, workers: int, sampler: str) -> Any:
    from sweeps.study import load_study

    storage = "null" if kind == "journal" else f"sqlite:///{folder / 'study.db'}"
    path = folder / "scale.yaml"
    path.write_text(STUDY.format(base=REPO / "sweeps" / "demo" / "base" / "vit_micro.yaml", trials=trials,
                                 sampler=sampler, storage=storage, workers=workers))
    return load_study(path, ["tracking.mode=disabled"], output_root=folder)


def _create(study: Any) -> None:
    """Create the study in a process of its own (no storage connection is forked into the workers)."""
    from jobs.tune import open_study

    open_study(study, create=True)


def _worker(study: Any, index: int, out: Path, start_at: float) -> None:
    """One worker: hand-out, a trial's storage writes, tell; until the study has its trials."""
    import jobs.tune.worker as tw
    from jobs.study_storage import record_heartbeat
    from jobs.tune import open_study

    holds: list[float] = []
    real_lock = tw.file_lock

    @contextlib.contextmanager
    def timed_lock(path: Path, **kw: Any) -> Iterator[bool]:
        with real_lock(path, **kw) as held:
            t0 = time.perf_counter()
            try:
                yield held
            finally:
                holds.append(time.perf_counter() - t0)

    tw.file_lock = timed_lock  # type: ignore[assignment] - measure how long the ask lock is held
    worker = tw.TuneWorker(study, worker=index)
    ostudy = open_study(study, worker=index)
    rows: list[list[Any]] = []
    while time.time() < start_at:
        time.sleep(0.01)
    error = None
    try:
        while True:
            t0 = time.perf_counter()
            trial = worker._next_trial(ostudy)
            t1 = time.perf_counter()
            if trial is None or isinstance(trial, str):
                break
            hold = holds[-1] if holds else 0.0
            params = tw._suggest(trial, study)
            trial.set_user_attr("run_id", f"r{trial.number}")
            trial.set_user_attr("run_dir", f"{study.output_root}/r{trial.number}")
            trial.set_user_attr("values", params)
            record_heartbeat(trial)
            t2 = time.perf_counter()
            ostudy.tell(trial, sum(params.values()))
            t3 = time.perf_counter()
            rows.append([trial.number, t1 - t0, hold, t2 - t1, t3 - t2, time.time(),
                         [params[k] for k in sorted(params)]])
    except Exception as err:  # noqa: BLE001 - reported as the worker's error, the study goes on
        error = f"{type(err).__name__}: {err}"[:300]
    (out / f"worker{index}.json").write_text(json.dumps({"rows": rows, "error": error}))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _windows(rows: list[list[Any]], size: int) -> list[dict[str, Any]]:
    out = []
    rows = sorted(rows, key=lambda r: r[0])
    for lo in range(0, len(rows), size):
        chunk = rows[lo:lo + size]
        ends = sorted(r[5] for r in chunk)
        span = ends[-1] - ends[0] if len(ends) > 1 else float("nan")
        ms = {name: [r[i] * 1000 for r in chunk] for name, i in (("ask", 1), ("hold", 2), ("suggest", 3), ("tell", 4))}
        out.append({
            "trials": f"{chunk[0][0]}-{chunk[-1][0]}",
            "per_s": round(len(chunk) / span, 1) if span and span > 0 else None,
            **{f"{k}_p{int(q * 100)}": round(_pct(v, q), 1) for k, v in ms.items() for q in (0.5, 0.95, 0.99)},
            "hold_mean": round(statistics.fmean(ms["hold"]), 2),
        })
    return out


def _open_time(study: Any) -> float:
    from jobs.tune import open_study

    t0 = time.perf_counter()
    open_study(study).get_trials(deepcopy=False)
    return time.perf_counter() - t0


def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = args.out / kind
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    study = _load(folder, kind, args.trials, args.workers, args.sampler)
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_create, args=(study,))
    proc.start()
    proc.join()
    results = folder / "workers"
    results.mkdir()
    start_at = time.time() + 2.0 + 0.05 * args.workers  # all workers open the study first, then start together
    procs = [ctx.Process(target=_worker, args=(study, i, results, start_at)) for i in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.time() - start_at

    rows: list[list[Any]] = []
    errors = []
    handed: dict[int, int] = {}
    for path in sorted(results.glob("worker*.json")):
        data = json.loads(path.read_text())
        rows += data["rows"]
        if data["error"]:
            errors.append(f"{path.stem}: {data['error']}")
        for r in data["rows"]:
            handed[r[0]] = handed.get(r[0], 0) + 1
    exit_codes = [p.exitcode for p in procs if p.exitcode]

    from jobs.tune import open_study

    trials = open_study(study).get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    params = [tuple(round(v, 12) for v in r[6]) for r in rows]
    size = (folder / "study.journal").stat().st_size if kind == "journal" else (folder / "study.db").stat().st_size
    result = {
        "storage": kind, "workers": args.workers, "trials": args.trials, "sampler": args.sampler,
        "wall_s": round(wall, 1), "trials_per_s": round(len(rows) / wall, 1),
        "told": len(rows), "states": states,
        "handed_twice": sum(1 for n in handed.values() if n > 1),
        "dup_params": len(params) - len(set(params)),
        # a trial that ended in any other state, or a complete trial short of the goal, was lost
        "lost": max(0, args.trials - states.get("complete", 0)) + sum(v for k, v in states.items() if k != "complete"),
        "extra": max(0, states.get("complete", 0) - args.trials),
        "errors": errors, "exit_codes": exit_codes,
        "storage_mb": round(size / 1e6, 1), "open_s": round(_open_time(study), 2),
        "windows": _windows(rows, args.window),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": date.today().isoformat(),
        "python": platform.python_version(),
    }
    (args.out / f"result-{kind}.json").write_text(json.dumps(result, indent=1))
    return result


def _print(result: dict[str, Any]) -> None:
    r = result
    print(f"\n### {r['storage']}: {r['workers']} workers, {r['trials']} trials ({r['sampler']} sampler), "
          f"{r['machine']}, {r['date']}\n")
    print("| trials | trials/s | ask p50 / p95 / p99 ms | lock hold p50 / p95 ms | suggest p50 / p95 ms "
          "| tell p50 / p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for w in r["windows"]:
        print(f"| {w['trials']} | {w['per_s']} | {w['ask_p50']} / {w['ask_p95']} / {w['ask_p99']} | "
              f"{w['hold_p50']} / {w['hold_p95']} | {w['suggest_p50']} / {w['suggest_p95']} | "
              f"{w['tell_p50']} / {w['tell_p95']} |")
    print(f"\nwall {r['wall_s']} s ({r['trials_per_s']} trials/s); states {r['states']}; handed twice "
          f"{r['handed_twice']}; duplicate params {r['dup_params']}; lost {r['lost']}; extra {r['extra']}; "
          f"storage {r['storage_mb']} MB; a new process opens the study in {r['open_s']} s")
    if r["errors"] or r["exit_codes"]:
        print(f"worker errors: {r['errors']} exit codes: {r['exit_codes']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", nargs="+", choices=("journal", "sqlite"), default=["journal", "sqlite"])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=1_000, help="trials per row of the table")
    parser.add_argument("--sampler", choices=("random", "tpe"), default="random",
                        help="random isolates the storage; tpe adds its own per-trial cost (grows with trials)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench-tune-scale")
    args = parser.parse_args()
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.storage:
        _print(run(kind, args))


if __name__ == "__main__":
    main()
