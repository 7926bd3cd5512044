"""``suite sweep plan|launch|status``: the sweep commands of the ``suite`` CLI.

``suite.cli.main`` calls :func:`register` at start-up. Exit codes follow the rest of the CLI: 0 ok,
1 runs failed (``launch`` of local/debug runs, or ``--wait``), 2 invalid input (nothing was
submitted), 75 interrupted (launch again to resume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from suite.cli.console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    OverridesArg,
    console,
    err_console,
    invalid,
    styled_state,
)
from suite.run.records import RunState, read_run

__all__ = ["register"]

SHOWN_ROWS = 60

sweep_app = typer.Typer(
    help="Plan, launch and watch sweeps: ablation grids of runs on SLURM or on this machine.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="Sweep YAML file (see docs/sweeps.md).", show_default=False)]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output-root", help="Replace the sweep's output_root (run folders and state file)."),
]


def register(app: typer.Typer) -> None:
    """Attach the ``sweep`` command group to the ``suite`` app."""
    app.add_typer(sweep_app, name="sweep")


def _invalid(err: object) -> typer.Exit:
    return invalid("invalid sweep", err)


RESOURCES_PREFIX = "resources."


def _load(path: Path, overrides: list[str] | None, output_root: Path | None):
    """The sweep, with ``resources.<key>=<value>`` arguments applied to its resources and the
    other ``key=value`` arguments to its base run config."""
    from sweeps.spec import SweepError, load_sweep

    items = list(overrides or [])
    resources = [a for a in items if a.startswith(RESOURCES_PREFIX)]
    try:
        sweep = load_sweep(path, [a for a in items if a not in resources], output_root=output_root)
        return _with_resources(sweep, resources) if resources else sweep
    except SweepError as err:
        raise _invalid(err) from None


def _with_resources(sweep: Any, items: list[str]) -> Any:
    """``sweep`` with ``resources.nodes=2``-style overrides (YAML values) applied to its resources.

    They change what a run asks the scheduler for, never a run id. When ``gpus_per_node`` is
    overridden alone, a ``tasks_per_node`` equal to the file's ``gpus_per_node`` follows it (one
    process per GPU).
    """
    import dataclasses

    import yaml
    from pydantic import ValidationError

    from sweeps.spec import ResourcesSpec, SweepError

    current = sweep.spec.resources.model_dump(exclude_unset=True)
    updates: dict[str, Any] = {}
    for item in items:
        key, _, text = item[len(RESOURCES_PREFIX):].partition("=")
        if key not in ResourcesSpec.model_fields:
            raise SweepError(
                f"{sweep.path}: command-line override {item}: unknown resources key {key!r}; valid keys: "
                + ", ".join(ResourcesSpec.model_fields)
            )
        try:
            updates[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise SweepError(f"{sweep.path}: command-line override {item}: not a YAML value ({err})") from None
    if "gpus_per_node" in updates and "tasks_per_node" not in updates and (
        current.get("tasks_per_node") == current.get("gpus_per_node", ResourcesSpec().gpus_per_node)
    ):
        current.pop("tasks_per_node", None)
    try:
        resources = ResourcesSpec.model_validate({**current, **updates})
    except ValidationError as err:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'resources'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise SweepError(f"{sweep.path}: command-line override {' '.join(items)}: {reasons}") from None
    return dataclasses.replace(sweep, spec=sweep.spec.model_copy(update={"resources": resources}))




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


@sweep_app.command()
def plan(
    file: FileArg,
    overrides: OverridesArg = None,
    output_root: OutputOpt = None,
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
    files = [file, *(Path(a) for a in overrides or [] if "=" not in a)]
    settings = [a for a in overrides or [] if "=" in a]
    if len(files) > 1:
        failed = 0
        for path in files:
            try:
                _plan_one(path, settings, output_root, show_all, as_json)
            except typer.Exit as exit_:
                failed += exit_.exit_code != 0
        if failed:
            raise typer.Exit(EXIT_INVALID)
        return
    _plan_one(file, settings, output_root, show_all, as_json)


def _plan_one(
    file: Path, overrides: list[str], output_root: Path | None, show_all: bool, as_json: bool
) -> None:
    from sweeps.estimate import estimate
    from sweeps.expand import expand
    from sweeps.spec import SweepError

    sweep = _load(file, overrides, output_root)
    try:
        the_plan = expand(sweep, check_paths=False)
    except SweepError as err:
        raise _invalid(err) from None
    est = estimate(the_plan)
    runs = the_plan.all_runs()
    states = {run.run_id: run.state().value for run in runs}
    if as_json:
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
                "state": states[r.run_id],
                "hours": est.hours[r.run_id],
            }
            for r in runs
        ]
        print(
            json.dumps(
                {
                    "sweep": sweep.name,
                    "output_root": str(sweep.output_root),
                    "runs": rows,
                    "hours": est.total_hours,
                    "device": est.device,
                    "processes": sweep.spec.resources.processes,
                    "wall_hours": est.wall_hours,
                    "sweep_wall_hours": est.sweep_wall_hours,
                    "warnings": the_plan.warnings,
                },
                indent=2,
                default=str,
            )
        )
        return
    spec = sweep.spec
    title = f"sweep {sweep.name}" + (f": {spec.description}" if spec.description else "")
    table = Table(title=title, caption=f"{sweep.path}  ->  {sweep.output_root}", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("run id")
    table.add_column("differs from base")
    table.add_column("state")
    table.add_column(f"{est.device}-h", justify="right")
    shown = runs if show_all else runs[:SHOWN_ROWS]
    for run in shown:
        index = f"p{run.index}" if run.prerequisite else str(run.index)
        table.add_row(
            index, run.run_id, run.label(), styled_state(states[run.run_id]), _hours(est.hours[run.run_id])
        )
    console.print(table)
    if len(shown) < len(runs):
        console.print(f"... {len(runs) - len(shown)} more runs (--all lists them)")
    counts: dict[str, int] = {}
    for value in states.values():
        counts[value] = counts.get(value, 0) + 1
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
    console.print(
        f"[bold]{len(runs)} runs[/] ({spec.mode}, {len(spec.seeds or [None])} seed(s)): "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + (f"; {'; '.join(extra)}" if extra else "")
    )
    unknown = f" (+{est.unknown} runs without a throughput figure)" if est.unknown else ""
    res = spec.resources
    console.print(
        f"estimated {est.device}-hours still to spend: [bold]{_hours(est.total_hours)}[/]{unknown}; "
        f"per run: {_layout(res)}, {res.cpus_per_task} CPUs per process, {res.mem_gb:g} GB per node, "
        f"{res.timeout_min} min per job"
    )
    if est.wall_hours is not None:
        console.print(
            f"wall clock: about {_hours(est.wall_hours)} h per run; the sweep, "
            f"{min(res.array_parallelism, max(1, len(runs)))} run(s) at a time: about "
            f"{_hours(est.sweep_wall_hours)} h",
            highlight=False,
        )
    for model, source in est.sources.items():
        console.print(f"  throughput {model}: {source}", highlight=False)
    for warning in the_plan.warnings:
        console.print(f"[yellow]warning[/] {warning}", highlight=False)
    for run in runs:
        if states[run.run_id] == RunState.CORRUPT.value:
            problem = read_run(run.paths.root).problem
            console.print(f"[red]corrupt[/] {run.run_id}: {problem}", highlight=False, soft_wrap=True)


@sweep_app.command()
def launch(
    file: FileArg,
    overrides: OverridesArg = None,
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
    output_root: OutputOpt = None,
) -> None:
    """Submit every run that is not done and not queued; finished runs are skipped.

    Checks every run config, the executor and (SLURM) the resources against the partition
    before submitting anything. Launching again reruns failed and missing runs and resumes
    interrupted ones from their checkpoints.
    """
    from jobs.launch import LaunchInterrupted, SubmissionError, stop_signals_interrupt
    from jobs.launch import launch as run_launch
    from sweeps.spec import SweepError

    sweep = _load(file, overrides, output_root)
    try:
        with stop_signals_interrupt():
            report = run_launch(
                sweep,
                executor=executor,
                max_parallel=max_parallel,
                wait=wait,
                poll_s=poll,
                check_paths=check_paths,
                echo=lambda line: console.print(line, highlight=False),
            )
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
    done = sum(1 for s in report.skipped.values() if s.is_finished())
    active = sum(1 for s in report.skipped.values() if s.is_active())
    corrupt = [rid for rid, s in report.skipped.items() if s is RunState.CORRUPT]
    console.print(
        f"[bold]{report.executor}[/]: submitted {len(report.submitted)} run(s); skipped {done} finished/pruned and "
        f"{active} already queued or running"
        + (f"; {len(report.blocked)} blocked by a failed prerequisite" if report.blocked else "")
        + (f"; {len(corrupt)} with a corrupt record (suite sweep status {file} names the file)" if corrupt else "")
    )
    if report.arrays:
        console.print(
            f"{len(report.arrays)} sbatch call(s): "
            + ", ".join(f"job {a['job_id']} ({a['size']} runs, %{a['parallelism']})" for a in report.arrays)
        )
    console.print(f"state: {report.state_file}   watch: suite sweep status {file}")
    if report.failed():
        err_console.print(
            f"[red]{len(report.failed())} run(s) failed[/]: suite sweep status {file} shows why"
        )
        raise typer.Exit(EXIT_FAILED)


def _find_state(target: Path, output_root: Path | None) -> tuple[Any, Any]:
    """The state file (or None) and the sweep (None for a directory target)."""
    from jobs.sweep_state import STATE_FILE_NAME, SweepState

    def warn(line: str) -> None:
        err_console.print(f"[yellow]warning[/] {line}", highlight=False, soft_wrap=True)

    if target.is_dir():
        path = target / STATE_FILE_NAME
        if not path.is_file():
            raise _invalid(
                f"{target}: no {STATE_FILE_NAME} here; give the sweep file, or launch the sweep first"
            )
        state = SweepState.read_or_set_aside(path, warn)
        return (state if state is not None else SweepState.from_run_folders(path)), None
    sweep = _load(target, None, output_root)
    return SweepState.read_or_set_aside(sweep.state_file, warn), sweep


@sweep_app.command()
def status(
    target: Annotated[
        Path, typer.Argument(help="Sweep YAML file, or its output folder (holding sweep-state.json).")
    ],
    output_root: OutputOpt = None,
    logs: Annotated[int, typer.Option("--logs", help="Log lines shown per failed run.")] = 5,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every run, not only the unfinished ones.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Counts by state, failed runs with their error and log tail, and GPU-hours used.

    One scheduler query (``sacct``) covers every job of the sweep.
    """
    from jobs.status_report import collect

    state, sweep = _find_state(target, output_root)
    if state is None:
        from jobs.sweep_state import RunEntry, SweepState
        from sweeps.expand import expand
        from sweeps.spec import SweepError

        try:
            the_plan = expand(sweep, check_paths=False)
        except SweepError as err:
            raise _invalid(err) from None
        state = SweepState(
            sweep.state_file,
            sweep.name,
            str(sweep.path),
            str(sweep.output_root),
            str(sweep.output_root / ".submitit" / "%j"),
        )
        for run in the_plan.all_runs():
            state.runs[run.run_id] = RunEntry(
                run.index,
                run.values,
                run.label(),
                run.prerequisite,
                list(run.needs),
                state=RunState.NEW.value,
            )
        console.print("[yellow]not launched yet[/] (no sweep-state.json): states come from the run folders")
    report = collect(state, log_lines=logs)
    if as_json:
        print(
            json.dumps(
                {
                    "sweep": state.sweep,
                    "counts": {s.value: n for s, n in report.counts.items()},
                    "gpu_hours": report.gpu_hours,
                    "gpu_hours_source": report.gpu_hours_source,
                    "accounting_ok": report.accounting_ok,
                    "runs": [
                        {
                            "run_id": r.run_id,
                            "index": r.entry.index,
                            "label": r.entry.label,
                            "state": r.state.value,
                            "job_id": r.entry.job_id,
                            "scheduler": r.observation.scheduler,
                            "error": r.error,
                            "log_tail": r.log_tail,
                            "log": r.log_path,
                        }
                        for r in report.runs
                    ],
                },
                indent=2,
            )
        )
        return
    counts = Table(title=f"sweep {state.sweep}: {len(report.runs)} runs", caption=state.output_root)
    for s in report.counts:
        counts.add_column(styled_state(s.value), justify="right")
    counts.add_row(*[str(n) for n in report.counts.values()])
    console.print(counts)
    shown = [r for r in report.runs if show_all or not r.state.is_finished()]
    if shown:
        table = Table(show_lines=False)
        for column in ("#", "run id", "state", "job", "values"):
            table.add_column(column)
        for r in shown[: (None if show_all else SHOWN_ROWS)]:
            index = f"p{r.entry.index}" if r.entry.prerequisite else str(r.entry.index)
            table.add_row(index, r.run_id, styled_state(r.state.value), r.entry.job_id or "-", r.entry.label)
        console.print(table)
    for r in report.runs:
        if r.state is RunState.CORRUPT:
            console.print(f"[red]corrupt[/] {r.run_id} ({r.entry.label}): {r.error}", highlight=False, soft_wrap=True)
        elif r.error or r.log_tail:
            console.print(
                f"[red]failed[/] {r.run_id} ({r.entry.label}): {r.error or 'no error recorded'}",
                highlight=False,
            )
            if r.log_path:
                console.print(f"  log {r.log_path}:", highlight=False)
            for line in r.log_tail:
                console.print(f"    {line}", highlight=False, markup=False)
    if not report.accounting_ok:
        console.print(
            "[yellow]warning[/] sacct did not answer: states of SLURM jobs come from the run folders only"
        )
    console.print(f"GPU-hours used: [bold]{report.gpu_hours:.3g}[/] (from {report.gpu_hours_source})")
    if any(r.state.needs_launch() for r in report.runs):
        console.print(
            "relaunch failed, cancelled, interrupted and new runs with: suite sweep launch <sweep file>"
        )
