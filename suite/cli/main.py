"""The ``suite`` command line: one root for train, config, maps, runs, and the command groups of
the other packages (sweep, tune, report, demo), which attach through the ``suite.commands`` entry
points so this bottom package never names them.

Exit codes (``suite.cli.console``): 0 success, 1 the run failed (see the run's failure.json), 2
invalid input (nothing was started), 75 interrupted by a signal after writing a checkpoint
(rerun the same command to resume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from suite.run.names import is_occlusion_key
from suite.cli.console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    OverridesArg,
    console,
    err_console,
    invalid,
)

app = typer.Typer(
    help="TokenMix ablation suite: train timm ViTs with TokenMix/CutMix/Mixup, run sweeps, make ablation tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
maps_app = typer.Typer(help="Offline teacher maps: compute once, train with teacher.maps=DIR.", no_args_is_help=True)
app.add_typer(maps_app, name="maps")
runs_app = typer.Typer(help="Run folders: migrate folders made by earlier suite versions.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

ENTRY_POINT_GROUP = "suite.commands"

ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML run config; overrides are applied on top of it.")
]


def _load(config: Path | None, overrides: list[str] | None, *, machine: bool = False):  # noqa: ANN202
    """The validated config (exit 2 with the field named when invalid); ``machine`` adds this machine's checks."""
    from suite.config import ConfigError, load_config
    from suite.train.preflight import check_machine

    try:
        cfg = load_config(config, overrides or [])
        if machine:
            check_machine(cfg)
        return cfg
    except ConfigError as err:
        raise invalid("invalid config", err) from None


@app.command()
def train(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    progress: Annotated[
        Optional[bool], typer.Option("--progress/--no-progress", help="Per-epoch progress bar (default: on a TTY).")
    ] = None,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="Data-parallel processes on this machine (gloo on CPU; for testing).")
    ] = 1,
) -> None:
    """Train one run (or resume it from its checkpoint, or report it if already finished).

    The run directory is <run.output_root>/<run_id>/ with config.json, metrics.jsonl,
    summary.json, checkpoint.pt and train.log. SIGTERM/SIGUSR1/Ctrl-C stop at the next
    step with a checkpoint (exit code 75); running the same command again resumes.
    With --nproc N, N processes train the run together (data.batch_size is the global batch).
    """
    from suite.config import ConfigError, run_id
    from suite.run.migrate import legacy_match
    from suite.run.records import CorruptRecordError, RunBusyError, RunState
    from suite.train.trainer import train as run_training

    cfg = _load(config, overrides, machine=True)
    rid = run_id(cfg)
    old = legacy_match(cfg)
    if old is not None:
        raise invalid(
            "run folder from an earlier suite version",
            f"{old} holds this run under its old id; run `suite runs migrate {old.parent}` to rename it to {rid} "
            "(nothing is retrained)",
        )
    if nproc > 1:
        from suite.device.distributed import launch_local

        console.print(f"run [bold]{rid}[/]  ->  {Path(cfg.run.output_root) / rid}  ({nproc} processes)")
        argv = ["train", *(overrides or []), *(["-c", str(config)] if config else [])]
        argv += [] if progress is None else ["--progress" if progress else "--no-progress"]
        raise typer.Exit(launch_local(argv, nproc))
    from suite.device.distributed import environment, shutdown

    main_rank = environment().rank == 0
    if environment().world_size == 1:  # a launcher of several processes said it already
        console.print(f"run [bold]{rid}[/]  ->  {Path(cfg.run.output_root) / rid}")
    try:
        result = run_training(cfg, progress=progress if main_rank else False)
    except RunBusyError as err:
        err_console.print(f"[bold red]busy[/]: {escape(str(err))}")
        raise typer.Exit(EXIT_FAILED) from None
    except ConfigError as err:  # e.g. the teacher file changed since the run started
        raise invalid("invalid config", err) from None
    except OSError as err:  # the run folder cannot be written (read-only output root, full disk)
        err_console.print(f"[bold red]cannot write[/] {escape(str(err.filename or cfg.run.output_root))}: "
                          f"{escape(str(err.strerror or err))}; "
                          "choose a writable run.output_root", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except CorruptRecordError as err:
        err_console.print(f"[bold red]corrupt[/]: {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as err:  # noqa: BLE001 - summarised for the user; traceback kept in failure.json
        err_console.print(f"[bold red]run {rid} failed[/]: {type(err).__name__}: {escape(str(err))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        shutdown()
    if not main_rank:
        raise typer.Exit(EXIT_INTERRUPTED if result.state is RunState.INTERRUPTED else 0)
    if result.state is RunState.INTERRUPTED:
        console.print(f"[yellow]interrupted[/] at epoch {result.summary.get('epoch')}, step "
                      f"{result.summary.get('step')}; run the same command again to resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    _print_summary(result.summary)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"run {summary['run_id']} ({summary.get('status', 'finished')})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ["top1", "top5", "best_top1", "best_top1_max", "epochs", "images_per_s", "wall_seconds", "device"]
    keys += sorted(k for k in summary if is_occlusion_key(k))
    for key in keys:
        value = summary.get(key)
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)


@config_app.command("show")
def config_show(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the resolved config (all defaults filled in) and its run id; starts nothing."""
    import yaml

    from suite.config import run_id

    from suite.config import ConfigError

    cfg = _load(config, overrides)
    data = json.loads(cfg.model_dump_json())
    try:
        rid = run_id(cfg)
    except ConfigError as err:  # a teacher file that cannot be read here
        raise invalid("invalid config", err) from None
    if as_json:
        print(json.dumps({"run_id": rid, "config": data}, indent=2))
        return
    print(f"# run_id: {rid}")
    print(yaml.safe_dump(data, sort_keys=False), end="")


@maps_app.command("build")
def maps_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for maps.npy and maps.json.")],
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    img_size: Annotated[
        Optional[int], typer.Option("--img-size", help="Side the whole images are resized to (default data.img_size).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Teacher batch size.")] = 128,
    crop: Annotated[
        str,
        typer.Option(
            "--crop",
            help="squash: whole image resized to the square; center: short side resized, central square "
            "kept (TokenLabeling's maps, as the reference).",
        ),
    ] = "squash",
) -> None:
    """Run the teacher once over the whole training set and store its activation maps.

    Give the data and the teacher as for `suite train`, e.g. `suite maps build teacher=runs/<id>
    data=/path/to/imagenet --out maps/r50 --img-size 448`. Then train with
    `teacher.maps=maps/r50` (or `teacher=maps:maps/r50`): each step cuts the stored maps to the
    samples' crops instead of running the teacher. Rerunning with the same inputs does nothing.
    SIGTERM, SIGUSR1 or Ctrl-C stop the build at the next chunk boundary (exit code 75); the same
    command continues it from there.
    """
    from rich.progress import Progress

    from suite.teacher.maps_build import MapsBuildStopped, build_offline_maps

    if crop not in ("squash", "center"):
        raise invalid("invalid option", f"--crop: give squash or center, not {crop!r}")
    cfg = _load(config, ["mix.method=tokenmix", *(overrides or [])], machine=True)  # teacher needs TokenMix
    if cfg.teacher.checkpoint is None:
        raise invalid("invalid config", "teacher: give the teacher, e.g. teacher=runs/<run_id>")
    try:
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("teacher maps", total=None)
            meta = build_offline_maps(
                cfg, out, img_size=img_size, batch_size=batch_size, crop=crop,  # type: ignore[arg-type]
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except MapsBuildStopped as err:
        err_console.print(f"[yellow]stopped[/]: {escape(str(err))}; run the same command to continue", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    h, w = meta["map_size"]
    console.print(f"{meta['count']} maps of {h}x{w} ({meta['img_size']} px input, {meta['crop']}) in [bold]{out}[/]; "
                  f"train with teacher.maps={out}")


@runs_app.command("migrate")
def runs_migrate(
    output_root: Annotated[Path, typer.Argument(help="Folder holding run folders (a sweep's output_root).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be renamed; change nothing.")] = False,
) -> None:
    """Rename run folders made by earlier suite versions to their current run ids.

    Earlier versions hashed every config field, defaults included, so their ids differ from
    today's. Each folder's config.json is validated, its current id computed, and the folder
    renamed (config.json and summary.json updated). Nothing is retrained; checkpoints resume.
    """
    from suite.run.migrate import migrate

    moves, problems = migrate(output_root, dry_run=dry_run)
    for old, new in moves:
        console.print(f"{'would rename' if dry_run else 'renamed'} {old.name} -> {new.name}", highlight=False)
    for line in problems:
        err_console.print(f"[yellow]skipped[/] {escape(str(line))}", highlight=False)
    console.print(f"{len(moves)} run folder(s) {'to migrate' if dry_run else 'migrated'}, {len(problems)} skipped")
    if problems:
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    """Entry point of the ``suite`` console script."""
    import suite  # noqa: F401 - torchvision shim before anything imports timm

    register_command_groups(app)
    app(prog_name="suite")


def register_command_groups(root: typer.Typer) -> None:
    """Attach the command groups that other packages declare under the ``suite.commands`` entry points."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        entry.load()(root)


if __name__ == "__main__":
    sys.exit(main())
