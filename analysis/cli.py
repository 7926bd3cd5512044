"""``suite report``: ablation tables, plots and a report folder from sweep files.

``suite.cli.main`` attaches the command through :func:`register`. Exit codes follow the rest of the
CLI: 0 the report was written, 2 invalid input (a sweep file, format or source that cannot be
used; nothing was written).

The sweeps and their runs are named as ``suite sweep plan|launch|status`` name them: the same
positional ``key=value`` and ``resources.<key>=<value>`` overrides after the sweep files, and the
same ``--output-root`` (``suite.cli.console.sweep_args``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from suite.cli.console import (
    EXIT_INVALID,
    OutputRootOpt,
    SWEEP_OVERRIDES_HELP,
    SweepArgs,
    console,
    err_console,
    invalid,
    sweep_args,
    with_resources,
)

__all__ = ["EXIT_INVALID", "register"]

_TITLE = "invalid report input"

SourcesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="SWEEPS... [KEY=VALUE]...",
        help="Sweep YAML files, or folders of them (e.g. sweeps/demo). " + SWEEP_OVERRIDES_HELP,
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Comma-separated outputs: md,tex,csv,png (index.md is always written).")
]
MetricOpt = Annotated[
    str, typer.Option("--metric", help="Summary metric compared: top1 (final epoch), best_top1, best_top1_max, ...")
]
PivotOpt = Annotated[
    str | None, typer.Option("--pivot", help="ROWS,COLUMNS: the two axes of a grid sweep's pivot table.")
]
EffectOpt = Annotated[
    float,
    typer.Option("--effect", help="True difference (metric units, e.g. points of top-1) for which each table "
                 "states the seeds needed at 80 % power."),
]
FromOpt = Annotated[
    str, typer.Option("--from", help="Read runs from their directories (runs) or the W&B public API (wandb).")
]
WandbPathOpt = Annotated[
    str | None, typer.Option("--wandb-path", help="ENTITY/PROJECT of the W&B runs (with --from wandb).")
]
DeprecatedOverrideOpt = Annotated[
    list[str] | None,
    typer.Option("--override", hidden=True, help="Deprecated: give KEY=VALUE after the sweep files."),
]


def report(
    sources: SourcesArg,
    formats: FormatOpt = "md,tex,csv,png",
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("reports/latest"),
    metric: MetricOpt = "top1",
    pivot: PivotOpt = None,
    effect: EffectOpt = 1.0,
    source: FromOpt = "runs",
    wandb_path: WandbPathOpt = None,
    output_root: OutputRootOpt = None,
    deprecated_overrides: DeprecatedOverrideOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Read every record again (ignore the cache).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the tables.")] = False,
) -> None:
    """Write ablation tables (mean ± std over seeds, Δ vs baseline with a paired t-test) and plots.

    Reads every run the sweep files plan from the run directories (cached by file size and
    modification time), or from W&B with --from wandb --wandb-path ENTITY/PROJECT, and writes
    OUT/index.md, OUT/tables/*.md|tex|csv and OUT/plots/*.png. Give the overrides and
    --output-root the sweeps were launched with. Runs that are not finished are listed, never
    averaged in silently. On a terminal the tables are fitted to its width; piped or redirected,
    they are printed as Markdown.
    """
    from analysis.report import collect, write_report
    from sweeps.spec import SweepError

    args = _report_args(sources, deprecated_overrides)
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    axes = tuple(a.strip() for a in pivot.split(",")) if pivot else None
    if axes is not None and len(axes) != 2:
        raise invalid(_TITLE, f"--pivot {pivot}: give two axes, ROWS,COLUMNS")
    try:
        collection = collect(
            args.files, overrides=args.overrides, output_root=output_root, origin=source, wandb_path=wandb_path,
            cache=not no_cache, curves="png" in wanted,
        )
        result = write_report(collection, out, formats=wanted, metric=metric, pivot=axes,  # type: ignore[arg-type]
                              effect=effect)
    except SweepError as err:
        raise invalid(_TITLE, err) from None
    if not quiet:
        from analysis.render import print_tables

        print_tables(result.tables, console)
    _print_outcome(collection, result)


def _report_args(sources: list[str], deprecated_overrides: list[str] | None) -> SweepArgs:
    """The sweep files and overrides; ``resources.<key>=<value>`` are checked (they never change a run id)."""
    from sweeps.spec import ResourcesSpec

    if deprecated_overrides:
        err_console.print("[yellow]deprecated[/] --override KEY=VALUE: give KEY=VALUE after the sweep files, "
                          "as sweep plan and launch take it", highlight=False)
    args = sweep_args([*sources, *(deprecated_overrides or [])], title=_TITLE, several=True)
    if not args.files:
        raise invalid(_TITLE, "give at least one sweep file or folder before the KEY=VALUE overrides")
    try:
        with_resources(ResourcesSpec(), args.resources)
    except ValueError as err:
        raise invalid(_TITLE, err) from None
    return args


def _print_outcome(collection: Any, result: Any) -> None:
    frame = collection.frame
    finished = int((frame["state"] == "finished").sum()) if len(frame) else 0
    console.print(f"{finished}/{len(frame)} planned runs finished; report: [bold]{result.index}[/]"
                  f" ({len(result.tables)} tables, {sum(1 for f in result.files if f.suffix == '.png')} plots)",
                  soft_wrap=True)
    problems = collection.problems()
    if len(problems):
        counts = problems["state"].value_counts().to_dict()
        console.print("not in the statistics: " + ", ".join(f"{n} {s}" for s, n in counts.items())
                      + f" (listed in {result.index.name})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Attach ``suite report`` to the ``suite`` app."""
    app.command("report")(report)
