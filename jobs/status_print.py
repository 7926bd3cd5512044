"""What ``suite sweep status`` prints: the counts by state, the unfinished runs, the problems with
their log tails, the GPU-hours used, and the rows adaptive seeding extended (``--until-ci``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from suite.cli.console import console, err_console, styled_state
from suite.run.records import RunState

__all__ = [
    "index_text",
    "print_counts",
    "print_extra_seeds",
    "print_problems",
    "print_unfinished",
    "print_usage",
    "status_json",
]

SHOWN_ROWS = 60


def index_text(index: int, prerequisite: bool) -> str:
    """A run's number as plan and status show it: ``p0`` for a run trained first."""
    return f"p{index}" if prerequisite else str(index)


def _warn(line: str) -> None:
    err_console.print(f"[yellow]warning[/] {line}", highlight=False, soft_wrap=True)


def status_json(state: Any, report: Any) -> dict[str, Any]:
    return {
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
    }


def print_extra_seeds(state: Any) -> None:
    """The rows adaptive seeding (launch --until-ci) gave more seeds, and why each row has what it has."""
    from sweeps.extra_seeds import ExtraSeeds  # jobs reads sweeps' record

    try:
        record = ExtraSeeds.read(Path(state.output_root))
    except ValueError as err:
        _warn(str(err))
        return
    if not record.rows:
        return
    target = record.target
    console.print(f"adaptive seeds (--until-ci {target.get('width')}, --max-seeds {target.get('max_seeds')}, "
                  f"{target.get('metric', 'top1')}):", highlight=False)
    for entry in record.rows.values():
        extra = entry.get("seeds") or []
        added = f" (+ seeds {', '.join(map(str, extra))})" if extra else ""
        console.print(f"  {escape(str(entry.get('label')))}{added}: {escape(str(entry.get('why') or ''))}",
                      highlight=False)


def print_counts(state: Any, report: Any) -> None:
    counts = Table(title=f"sweep {state.sweep}: {len(report.runs)} runs", caption=state.output_root)
    for s in report.counts:
        counts.add_column(styled_state(s), justify="right")
    counts.add_row(*[str(n) for n in report.counts.values()])
    console.print(counts)


def print_unfinished(report: Any, show_all: bool) -> None:
    shown = [r for r in report.runs if show_all or not r.state.is_finished()]
    if not shown:
        return
    table = Table(show_lines=False)
    for column in ("#", "run id", "state", "job", "values"):
        table.add_column(column)
    for r in shown[: (None if show_all else SHOWN_ROWS)]:
        table.add_row(index_text(r.entry.index, r.entry.prerequisite), r.run_id, styled_state(r.state),
                      r.entry.job_id or "-", r.entry.label)
    console.print(table)


def print_problems(report: Any) -> None:
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


def print_usage(report: Any) -> None:
    if not report.accounting_ok:
        console.print(
            "[yellow]warning[/] sacct did not answer: states of SLURM jobs come from the run folders only"
        )
    console.print(f"GPU-hours used: [bold]{report.gpu_hours:.3g}[/] (from {report.gpu_hours_source})")
    if any(r.state.needs_launch() for r in report.runs):
        console.print(
            "relaunch failed, cancelled, interrupted and new runs with: suite sweep launch <sweep file>"
        )
