"""``suite tune FILE`` and ``suite tune status|best|plots FILE``: Optuna tuning from the ``suite`` CLI.

Attached through the ``suite.commands`` entry point (``tune = "jobs.tune_cli:register"``).
``suite tune FILE`` is short for ``suite tune run FILE``. Exit codes: 0 ok, 1 a worker failed,
2 invalid input (no study was created, nothing was submitted), 75 interrupted (run it again to
resume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from suite.cli.console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    OutputRootOpt,
    SweepOverridesArg,
    console,
    err_console,
    invalid,
    load_with_args,
    sweep_args,
)

__all__ = ["register"]

INVALID = "invalid study"


class _DefaultRun(TyperGroup):
    """A group whose first argument, when it is not a subcommand, is the study file of ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


tune_app = typer.Typer(
    cls=_DefaultRun,
    help="Optuna tuning: `suite tune FILE` runs a study (workers pull trials until n_trials are finished); "
    "`status`, `best` and `plots` read it.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="Study YAML file (see README, Tuning).", show_default=False)]


def register(app: typer.Typer) -> None:
    """Attach the ``tune`` command group to the ``suite`` app."""
    app.add_typer(tune_app, name="tune")


def _load(path: Path, overrides: list[str] | None, output_root: Path | None) -> Any:
    """The study, with the ``resources.<key>=<value>`` arguments applied to its workers' resources
    and the other ``key=value`` arguments to its base run config (as the sweep commands read them)."""
    from sweeps.study import StudyError, load_study

    args = sweep_args([path, *(overrides or [])], title=INVALID)
    return load_with_args(load_study, args, output_root, title=INVALID, errors=(StudyError,))


@tune_app.command("run")
def run_command(
    file: FileArg,
    overrides: SweepOverridesArg = None,
    executor: Annotated[str | None, typer.Option("--executor", "-e",
                                                 help="auto | slurm | local | debug (default: the file's)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Worker jobs (default: the file's).")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="SLURM: return once the workers are submitted.")] = False,
    no_check_paths: Annotated[bool, typer.Option(
        "--no-check-paths", help="Do not check the base config's data and checkpoints here (only the nodes see them)."
    )] = False,
    output_root: OutputRootOpt = None,
) -> None:
    """Run (or resume, or extend) a study until it has n_trials finished trials."""
    study = _load(file, overrides, output_root)
    from jobs.tune import tune
    from sweeps.study import StudyError

    try:
        report = tune(study, executor=executor, workers=workers, wait=not no_wait, check_paths=not no_check_paths,
                      echo=lambda line: console.print(line, highlight=False))
    except StudyError as err:
        raise invalid(INVALID, err) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if report.executor != "slurm" or not no_wait:
        _print_status(study)
    if report.failed_workers:
        raise typer.Exit(EXIT_FAILED)
    if any(r.get("stopped") == "interrupted" for r in report.results):
        raise typer.Exit(EXIT_INTERRUPTED)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_status(study: Any, *, show_all: bool = False, as_json: bool = False) -> None:
    from jobs.tune import study_status
    from sweeps.study import StudyError

    try:
        status = study_status(study)
    except StudyError as err:
        err_console.print(str(err), highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None
    if as_json:
        print(json.dumps(status.__dict__, default=str, indent=1))
        return
    counts = "  ".join(f"{k} {v}" for k, v in sorted(status.counts.items())) or "no trials"
    finished = status.counts.get("complete", 0) + status.counts.get("pruned", 0)
    console.print(f"study [bold]{status.name}[/]: {finished}/{status.n_trials} finished ({counts}); "
                  f"{status.direction} {status.metric}; storage {status.storage}", highlight=False)
    finished_runs = [r["run_id"] for r in status.trials if r["state"] in ("complete", "pruned") and r["run_id"]]
    repeats = len(finished_runs) - len(set(finished_runs))
    if repeats:  # Optuna counts each as a trial; the run is the same, trained once
        console.print(
            f"[yellow]note[/] the {len(finished_runs)} finished trials are {len(set(finished_runs))} distinct "
            f"run{'s' if len(set(finished_runs)) != 1 else ''}: "
            f"{repeats} repeated the parameters of an earlier trial (a sampler on a discrete space draws a point "
            "again) and reused its run, training nothing; raise n_trials or widen the space for more distinct runs",
            highlight=False, soft_wrap=True,
        )
    console.print(f"workers alive: {len(status.workers_alive)}"
                  + "".join(f"  [{w['job']} on {w.get('host')}, trial {w.get('trial', '-')}]"
                            for w in status.workers_alive), highlight=False)
    if status.best:
        console.print(f"best: trial {status.best['number']}  {status.metric} {_fmt(status.best['value'])}  "
                      + " ".join(f"{k}={_fmt(v)}" for k, v in status.best["params"].items())
                      + f"  run {status.best['run_id']}", highlight=False)
    rows = status.trials if show_all else status.trials[-30:]
    if not rows:
        return
    first_trial: dict[str, int] = {}
    for r in sorted(status.trials, key=lambda r: r["number"]):
        if r["run_id"]:
            first_trial.setdefault(r["run_id"], r["number"])
    table = Table(show_edge=False, pad_edge=False)
    for col in ("#", "state", "value", "epochs", "params", "run", "note"):
        table.add_column(col)
    for r in rows:
        note = r["error"] or (f"retry of {r['retry_of']}" if r["retry_of"] is not None else "")
        if not note and r["run_id"] and (first := first_trial.get(r["run_id"])) != r["number"]:
            note = f"same run as trial {first}"
        table.add_row(str(r["number"]), r["state"], _fmt(r["value"]), str(r["epochs"]),
                      " ".join(f"{k}={_fmt(v)}" for k, v in (r["params"] or {}).items()), r["run_id"] or "", note)
    console.print(table)


@tune_app.command("status")
def status_command(
    file: FileArg,
    overrides: SweepOverridesArg = None,
    show_all: Annotated[bool, typer.Option("--all", help="Every trial (default: the last 30).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    output_root: OutputRootOpt = None,
) -> None:
    """Trials by state, the best value and params, workers alive.

    Takes the overrides and --output-root that `suite tune` was given, read alike.
    """
    _print_status(_load(file, overrides, output_root), show_all=show_all, as_json=as_json)


@tune_app.command("best")
def best_command(
    file: FileArg,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated run.seed values.")] = "0,1,2",
    write: Annotated[Path | None, typer.Option("--write", help="Write the sweep file here.")] = None,
    output_root: OutputRootOpt = None,
) -> None:
    """The best trial as a seeded sweep file (then: suite sweep launch FILE)."""
    import yaml

    from jobs.tune import best_sweep
    from sweeps.study import StudyError

    study = _load(file, None, output_root)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        err_console.print(f"--seeds: comma-separated integers, but got {seeds!r}")
        raise typer.Exit(EXIT_INVALID) from None
    try:
        sweep = best_sweep(study, seeds=seed_list, write=write)
    except StudyError as err:
        err_console.print(str(err), highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None
    if write is None:
        print(yaml.safe_dump(json.loads(json.dumps(sweep)), sort_keys=False), end="")
    else:
        console.print(f"wrote {write}; run it with: suite sweep launch {write}", highlight=False)


@tune_app.command("plots")
def plots_command(
    file: FileArg,
    out: Annotated[Path | None, typer.Option("--out", help="Folder (default: <output_root>/plots).")] = None,
    output_root: OutputRootOpt = None,
) -> None:
    """Optimisation history, parameter importances and intermediate values as PNG."""
    from jobs.tune import plot_study

    for name, result in plot_study(_load(file, None, output_root), out).items():
        console.print(f"{name}: {result}", highlight=False)
