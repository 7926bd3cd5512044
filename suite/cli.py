"""The ``suite`` command line: train, inspect configs, run sweeps, make reports.

Exit codes: 0 success, 1 the run failed (see the run's failure.json), 2 invalid input
(nothing was started), 75 interrupted by a signal after writing a checkpoint (rerun the
same command to resume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

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

console = Console(stderr=False)
err_console = Console(stderr=True)

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 75

ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML run config; overrides are applied on top of it.")
]
OverridesArg = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Overrides as dotted key=value, e.g. mix.method=tokenmix mix.mask_ratio=0.5 schedule.epochs=5 "
        "(values are YAML: numbers, [lo,hi] lists, null). Shorthands: data=builtin, data=/path/to/imagenet, "
        "teacher=none, teacher=runs/<run_id>.",
        show_default=False,
    ),
]


def _load(config: Path | None, overrides: list[str] | None):  # noqa: ANN202 - TrainConfig, imported lazily
    from suite.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as err:
        err_console.print(f"[bold red]invalid config[/]\n{err}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
def train(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    progress: Annotated[
        Optional[bool], typer.Option("--progress/--no-progress", help="Per-epoch progress bar (default: on a TTY).")
    ] = None,
) -> None:
    """Train one run (or resume it from its checkpoint, or report it if already finished).

    The run directory is <run.output_root>/<run_id>/ with config.json, metrics.jsonl,
    summary.json, checkpoint.pt and train.log. SIGTERM/SIGUSR1/Ctrl-C stop at the next
    step with a checkpoint (exit code 75); running the same command again resumes.
    """
    from suite.config import run_id
    from suite.trainer import STATUS_FINISHED, train as run_training

    cfg = _load(config, overrides)
    rid = run_id(cfg)
    console.print(f"run [bold]{rid}[/]  ->  {Path(cfg.run.output_root) / rid}")
    try:
        result = run_training(cfg, progress=progress)
    except Exception as err:  # noqa: BLE001 - summarised for the user; traceback kept in failure.json
        err_console.print(f"[bold red]run {rid} failed[/]: {type(err).__name__}: {err}")
        raise typer.Exit(EXIT_FAILED) from None
    if result.status != STATUS_FINISHED:
        console.print(f"[yellow]interrupted[/] at epoch {result.summary.get('epoch')}, step "
                      f"{result.summary.get('step')}; run the same command again to resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    _print_summary(result.summary)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"run {summary['run_id']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ["top1", "top5", "best_top1", "epochs", "images_per_s", "wall_seconds", "device"]
    keys += sorted(k for k in summary if k.startswith("occ") and k.endswith("_top1"))
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

    cfg = _load(config, overrides)
    data = json.loads(cfg.model_dump_json())
    if as_json:
        print(json.dumps({"run_id": run_id(cfg), "config": data}, indent=2))
        return
    print(f"# run_id: {run_id(cfg)}")
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
) -> None:
    """Run the teacher once over the whole training set and store its activation maps.

    Give the data and the teacher as for `suite train`, e.g. `suite maps build teacher=runs/<id>
    data=/path/to/imagenet --out maps/r50 --img-size 448`. Then train with
    `teacher.maps=maps/r50` (or `teacher=maps/r50`): each step cuts the stored maps to the
    samples' crops instead of running the teacher. Rerunning with the same inputs does nothing.
    """
    from rich.progress import Progress

    from suite.offline_maps import build_offline_maps

    cfg = _load(config, ["mix.method=tokenmix", *(overrides or [])])  # the teacher only validates with TokenMix
    if cfg.teacher.checkpoint is None:
        err_console.print("[bold red]invalid config[/]\nteacher: give the teacher, e.g. teacher=runs/<run_id>")
        raise typer.Exit(EXIT_INVALID)
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("teacher maps", total=None)
        meta = build_offline_maps(
            cfg, out, img_size=img_size, batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    h, w = meta["map_size"]
    console.print(f"{meta['count']} maps of {h}x{w} ({meta['img_size']} px input) in [bold]{out}[/]; "
                  f"train with teacher.maps={out}")


def main() -> None:
    """Entry point of the ``suite`` console script."""
    import suite  # noqa: F401 - torchvision shim before anything imports timm

    _register_optional_commands()
    app(prog_name="suite")


def _register_optional_commands() -> None:
    """Attach the sweep/report/demo command groups that live in the other packages."""
    for module_name, attr in (("jobs.cli", "register"), ("analysis.cli", "register"), ("suite.demo", "register")):
        try:
            module = __import__(module_name, fromlist=[attr])
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        getattr(module, attr)(app)


if __name__ == "__main__":
    sys.exit(main())
