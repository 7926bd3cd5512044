"""``suite sweep plan|launch|status``: the sweep commands of the ``suite`` CLI.

``suite.cli.main`` calls :func:`register` at start-up. Exit codes follow the rest of the CLI: 0 ok,
1 runs failed (``launch`` of local/debug runs, or ``--wait``), 2 invalid input (nothing was
submitted), 75 interrupted (launch again to resume).

The three commands read their arguments as ``report``, ``tune`` and ``tune status`` do
(:func:`suite.cli.console.sweep_args`): ``key=value`` and ``resources.<key>=<value>`` after the file,
``--output-root DIR`` the folder of the run folders and ``sweep-state.json`` itself, so the same
arguments name the same runs everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from suite.cli.console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    OutputRootOpt,
    SweepArgs,
    SweepOverridesArg,
    console,
    err_console,
    invalid,
    load_with_args,
    styled_state,
    sweep_args,
)
from suite.run.names import SWEEP_STATE_FILE
from suite.run.records import RunState, read_run
from jobs.status_print import (
    index_text,
    print_counts,
    print_extra_seeds,
    print_problems,
    print_unfinished,
    print_usage,
    status_json,
)

__all__ = ["register"]

SHOWN_ROWS = 60

sweep_app = typer.Typer(
    help="Plan, launch and watch sweeps: ablation grids of runs on SLURM or on this machine.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="Sweep YAML file (see docs/sweeps.md).", show_default=False)]


def register(app: typer.Typer) -> None:
    """Attach the ``sweep`` command group to the ``suite`` app."""
    app.add_typer(sweep_app, name="sweep")


def _invalid(err: object) -> typer.Exit:
    return invalid("invalid sweep", err)


def _args(first: Path, rest: list[str] | None, *, several: bool = False) -> SweepArgs:
    return sweep_args([first, *(rest or [])], title="invalid sweep", several=several)


def _load(path: Path, args: SweepArgs, output_root: Path | None) -> Any:
    """The sweep, with the ``resources.<key>=<value>`` arguments applied to its resources and the
    other ``key=value`` arguments to its base run config."""
    from sweeps.spec import SweepError, load_sweep

    one = dataclasses.replace(args, files=(path,))
    return load_with_args(load_sweep, one, output_root, title="invalid sweep", errors=(SweepError,))


def _expand(sweep: Any) -> Any:
    """The sweep's plan, as ``plan`` shows it (missing paths are warnings)."""
    from sweeps.expand import expand
    from sweeps.spec import SweepError

    try:
        return expand(sweep, check_paths=False)
    except SweepError as err:
        raise _invalid(err) from None


def _hours(value: float | None) -> str:
    if value is None:
        return "?"
    if value == 0 or value >= 10:
        return f"{value:,.1f}"
    return f"{value:.2g}" if value < 0.1 else f"{value:.2f}"


def _layout(res: Any) -> str:
    """``2 node(s) x 8 GPU(s) = 16 processes``: what one run of the sweep asks for."""
    each = f"{res.gpus_per_node} GPU(s)" if res.gpus_per_node else f"{res.tasks} process(es), no GPU"
    return f"{res.nodes} node(s) x {each} = {res.processes} process(es)"



# ---- plan ---------------------------------------------------------------------------------------


@sweep_app.command()
def plan(
    file: FileArg,
    overrides: SweepOverridesArg = None,
    output_root: OutputRootOpt = None,
    show_all: Annotated[
        bool, typer.Option("--all", help=f"List every run (default: the first {SHOWN_ROWS}).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the runs of a sweep, their state and a GPU-hour estimate; submits nothing.

    Several sweep files may be given (`suite sweep plan sweeps/paper/*.yaml`): each is planned in
    turn, and any invalid one makes the command exit 2. Arguments with `=` are overrides for all.
    Paths that do not exist here (data.root of an ImageNet sweep, teacher checkpoints) are
    warnings: plan works on a laptop; launch refuses them.
    """
    args = _args(file, overrides, several=True)
    if len(args.files) == 1:
        _plan_one(file, args, output_root, show_all, as_json)
        return
    failed = 0
    for path in args.files:
        try:
            _plan_one(path, args, output_root, show_all, as_json)
        except typer.Exit as exit_:
            failed += exit_.exit_code != 0
    if failed:
        raise typer.Exit(EXIT_INVALID)


def _plan_one(file: Path, args: SweepArgs, output_root: Path | None, show_all: bool, as_json: bool) -> None:
    from sweeps.estimate import estimate

    sweep = _load(file, args, output_root)
    the_plan = _expand(sweep)
    est = estimate(the_plan)
    runs = the_plan.all_runs()
    states = {run.run_id: run.state() for run in runs}
    if as_json:
        print(json.dumps(_plan_json(sweep, the_plan, est, states), indent=2, default=str))
        return
    _print_plan_table(sweep, runs, est, states, show_all)
    _print_plan_totals(sweep, the_plan, est, states)
    _print_plan_notes(the_plan, est, states)


def _plan_json(sweep: Any, the_plan: Any, est: Any, states: dict[str, RunState]) -> dict[str, Any]:
    rows = [
        {
            "index": r.index,
            "run_id": r.run_id,
            "prerequisite": r.prerequisite,
            "kind": r.kind,
            "label": r.label(),
            "values": r.values,
            "changed": r.changed,
            "needs": list(r.needs),
            "state": states[r.run_id].value,
            "hours": est.hours[r.run_id],
        }
        for r in the_plan.all_runs()
    ]
    return {
        "sweep": sweep.name,
        "output_root": str(sweep.output_root),
        "runs": rows,
        "hours": est.total_hours,
        "device": est.device,
        "processes": sweep.spec.resources.processes,
        "wall_hours": est.wall_hours,
        "sweep_wall_hours": est.sweep_wall_hours,
        "warnings": the_plan.warnings,
    }


def _print_plan_table(sweep: Any, runs: list[Any], est: Any, states: dict[str, RunState], show_all: bool) -> None:
    description = sweep.spec.description
    title = f"sweep {sweep.name}" + (f": {description}" if description else "")
    table = Table(title=title, caption=f"{sweep.path}  ->  {sweep.output_root}", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("run id")
    table.add_column("differs from base")
    table.add_column("state")
    table.add_column(f"{est.device}-h", justify="right")
    shown = runs if show_all else runs[:SHOWN_ROWS]
    for run in shown:
        table.add_row(index_text(run.index, run.prerequisite), run.run_id, run.label(), styled_state(states[run.run_id]),
                      _hours(est.hours[run.run_id]))
    console.print(table)
    if len(shown) < len(runs):
        console.print(f"... {len(runs) - len(shown)} more runs (--all lists them)")


def _plan_extras(the_plan: Any) -> list[str]:
    """What the plan adds to the sweep's runs, or left out of it."""
    extra = []
    builds = sum(run.kind == "maps" for run in the_plan.prerequisites)
    if len(the_plan.prerequisites) > builds:
        extra.append(f"{len(the_plan.prerequisites) - builds} prerequisite(s) trained first")
    if builds:
        extra.append(f"{builds} maps build step(s) first")
    if the_plan.duplicates:
        extra.append(f"{the_plan.duplicates} duplicate(s) dropped")
    if the_plan.excluded:
        extra.append(f"{the_plan.excluded} excluded")
    return extra


def _print_plan_totals(sweep: Any, the_plan: Any, est: Any, states: dict[str, RunState]) -> None:
    spec, res = sweep.spec, sweep.spec.resources
    counts = Counter(state.value for state in states.values())
    extra = _plan_extras(the_plan)
    console.print(
        f"[bold]{len(states)} runs[/] ({spec.mode}, {len(spec.seeds or [None])} seed(s)): "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + (f"; {'; '.join(extra)}" if extra else "")
    )
    unknown = f" (+{est.unknown} runs without a throughput figure)" if est.unknown else ""
    console.print(
        f"estimated {est.device}-hours still to spend: [bold]{_hours(est.total_hours)}[/]{unknown}; "
        f"per run: {_layout(res)}, {res.cpus_per_task} CPUs per process, {res.mem_gb:g} GB per node, "
        f"{res.timeout_min} min per job"
    )
    if est.wall_hours is not None:
        console.print(
            f"wall clock: about {_hours(est.wall_hours)} h per run; the sweep, "
            f"{min(res.array_parallelism, max(1, len(states)))} run(s) at a time: about "
            f"{_hours(est.sweep_wall_hours)} h",
            highlight=False,
        )


def _print_plan_notes(the_plan: Any, est: Any, states: dict[str, RunState]) -> None:
    for model, source in est.sources.items():
        console.print(f"  throughput {model}: {source}", highlight=False)
    for warning in the_plan.warnings:
        console.print(f"[yellow]warning[/] {warning}", highlight=False)
    for run in the_plan.all_runs():
        if states[run.run_id] is RunState.CORRUPT:
            problem = read_run(run.paths.root).problem
            console.print(f"[red]corrupt[/] {run.run_id}: {problem}", highlight=False, soft_wrap=True)
    from jobs.status_report import renamed_sweep_hints
    from jobs.launch import legacy_hits

    root = the_plan.sweep.output_root
    legacy = legacy_hits(root, the_plan)
    if legacy:  # as launch says it (it refuses until then), so that "new" does not read as "to be trained"
        console.print(
            f"[yellow]hint[/] {len(legacy)} run(s) shown as new are in folders of an earlier suite version "
            + escape(f"({legacy[0]}); run `suite runs migrate {shlex.quote(str(root))}` ")
            + "to rename them: nothing is retrained, and launch refuses until then",
            highlight=False, soft_wrap=True,
        )
    for hint in renamed_sweep_hints(root, states):
        console.print(f"[yellow]hint[/] {hint}", highlight=False, soft_wrap=True)


# ---- launch -------------------------------------------------------------------------------------


@sweep_app.command()
def launch(
    file: FileArg,
    overrides: SweepOverridesArg = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor", "-e", help="slurm, local, debug or auto (default: the file's, else auto)."
        ),
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", "-j", help="Runs at once (SLURM: all arrays together).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="SLURM: stay until every job has ended.")
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", help="Seconds between scheduler polls with --wait.")
    ] = 15.0,
    check_paths: Annotated[
        bool,
        typer.Option(
            "--check-paths/--no-check-paths",
            help="Refuse data/checkpoint paths missing on this machine "
            "(turn off when only the compute nodes see them).",
        ),
    ] = True,
    output_root: OutputRootOpt = None,
    until_ci: Annotated[
        float | None,
        typer.Option("--until-ci", help="Adaptive seeds: add seeds to the rows whose 95 % CI of Δ top-1 is wider "
                     "than ± this many points, round after round (waits for each round)."),
    ] = None,
    max_seeds: Annotated[int, typer.Option("--max-seeds", help="With --until-ci: the most seeds a row gets.")] = 10,
) -> None:
    """Submit every run that is not done and not queued; finished runs are skipped.

    Checks every run config, the executor and (SLURM) the resources against the partition
    before submitting anything. Launching again reruns failed and missing runs and resumes
    interrupted ones from their checkpoints. With --until-ci W, rounds follow: after each, the
    rows whose interval half-width is above W (and that have fewer than --max-seeds seeds) get
    one more seed, their baseline too, until every row is within W or at the cap; the decisions
    are kept in extra-seeds.json, so plan, status and report show the added runs, and the same
    command started again trains only what is missing.
    """
    args = _args(file, overrides)
    options = {"executor": executor, "max_parallel": max_parallel, "poll_s": poll, "check_paths": check_paths}
    if until_ci is not None:
        from jobs.adaptive import launch_until_ci

        rounds = _submit(None, run=lambda launch, echo: launch_until_ci(
            lambda: _load(file, args, output_root), width=until_ci, max_seeds=max_seeds,
            overrides=list(args.overrides), launch=launch, say=echo, **options))
        for report in (r.launched for r in rounds):
            _print_launch(report, file)
        return
    sweep = _load(file, args, output_root)
    report = _submit(sweep, wait=wait, **options)
    _print_launch(report, file)


def _submit(sweep: Any, run: Any = None, **options: Any) -> Any:
    """The launch report of ``jobs.launch.launch`` (or what ``run(launch, echo)`` returns); an error
    is printed and its exit code raised."""
    from jobs.launch import LaunchInterrupted, SubmissionError, stop_signals_interrupt
    from jobs.launch import launch as run_launch
    from sweeps.spec import SweepError

    def echo(line: str) -> None:
        console.print(line, highlight=False)

    try:
        with stop_signals_interrupt():
            if run is not None:
                return run(run_launch, echo)
            return run_launch(sweep, echo=echo, **options)
    except SweepError as err:
        raise _invalid(err) from None
    except SubmissionError as err:
        err_console.print(f"[bold red]submission failed[/]\n{err}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except OSError as err:  # e.g. a read-only --output-root
        err_console.print(
            f"[bold red]cannot write[/] {err.filename or sweep.output_root}: {err.strerror or err}; "
            "choose a writable output_root (--output-root)",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED) from None
    except LaunchInterrupted as err:
        err_console.print(
            f"[yellow]interrupted[/] ({err}): every started run checkpointed; launch the same sweep again to resume",
            highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: launch the same sweep again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _print_launch(report: Any, file: Path) -> None:
    quoted = shlex.quote(str(file))  # for the shell; escape() below keeps rich from reading [..] as markup
    done = sum(1 for s in report.skipped.values() if s.is_finished())
    active = sum(1 for s in report.skipped.values() if s.is_active())
    corrupt = [rid for rid, s in report.skipped.items() if s is RunState.CORRUPT]
    console.print(
        f"[bold]{report.executor}[/]: submitted {len(report.submitted)} run(s); skipped {done} finished/pruned and "
        f"{active} already queued or running"
        + (f"; {len(report.blocked)} blocked by a failed prerequisite" if report.blocked else "")
        + (escape(f"; {len(corrupt)} with a corrupt record (suite sweep status {quoted} names the file)")
           if corrupt else "")
    )
    if report.arrays:
        console.print(
            f"{len(report.arrays)} sbatch call(s): "
            + ", ".join(f"job {a['job_id']} ({a['size']} runs, %{a['parallelism']})" for a in report.arrays)
        )
    console.print(escape(f"state: {report.state_file}   watch: suite sweep status {quoted}"))
    if report.failed():
        err_console.print(
            f"[red]{len(report.failed())} run(s) failed[/]: "
            + escape(f"suite sweep status {quoted} shows why")
        )
        raise typer.Exit(EXIT_FAILED)


# ---- status -------------------------------------------------------------------------------------


@sweep_app.command()
def status(
    target: Annotated[
        Path, typer.Argument(help="Sweep YAML file, or its output folder (holding sweep-state.json).")
    ],
    overrides: SweepOverridesArg = None,
    output_root: OutputRootOpt = None,
    logs: Annotated[int, typer.Option("--logs", help="Log lines shown per failed run.")] = 5,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every run, not only the unfinished ones.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Counts by state, failed runs with their error and log tail, and GPU-hours used.

    Give the sweep file the overrides and --output-root it was launched with. Without run config
    overrides, the runs are those of the sweep's state file (those plan shows before the first
    launch); with them, exactly the runs plan shows for them. One scheduler query (``sacct``)
    covers every job of the sweep.
    """
    from jobs.status_report import collect

    state = _status_state(target, _args(target, overrides), output_root)
    report = collect(state, log_lines=logs)
    if as_json:
        print(json.dumps(status_json(state, report), indent=2))
        return
    print_counts(state, report)
    print_extra_seeds(state)
    print_unfinished(report, show_all)
    print_problems(report)
    print_usage(report)


def _warn(line: str) -> None:
    err_console.print(f"[yellow]warning[/] {line}", highlight=False, soft_wrap=True)


def _status_state(target: Path, args: SweepArgs, output_root: Path | None) -> Any:
    """The state file of the runs status shows: the launched ones, or the plan's (see :func:`status`)."""
    from jobs.sweep_state import SweepState

    if target.is_dir():
        if args.overrides or args.resources or output_root is not None:
            raise _invalid(f"{target}: a folder is an output root, its runs those of its {SWEEP_STATE_FILE}; "
                           "give the sweep file with overrides or --output-root")
        return _folder_state(target)
    sweep = _load(target, args, output_root)
    state = SweepState.read_or_set_aside(sweep.state_file, _warn)
    if state is not None and not args.overrides:
        return state
    the_plan = _expand(sweep)
    if state is None:
        console.print(f"[yellow]not launched yet[/] (no {SWEEP_STATE_FILE}): states come from the run folders")
        state = SweepState.of_sweep(sweep)
    return state.with_plan(the_plan, only=True)


def _folder_state(folder: Path) -> Any:
    """The state file in an output folder, rebuilt from the run folders when it is unreadable."""
    from jobs.sweep_state import SweepState

    path = folder / SWEEP_STATE_FILE
    if not path.is_file():
        raise _invalid(f"{folder}: no {SWEEP_STATE_FILE} here; give the sweep file, or launch the sweep first")
    state = SweepState.read_or_set_aside(path, _warn)
    return state if state is not None else SweepState.from_run_folders(path)
