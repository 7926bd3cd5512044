"""``suite demo``: the embedded default, end to end on a laptop CPU in minutes.

Trains, on the built-in digits-on-clutter data, a small CNN teacher and then the same
small ViT with no mixing, with DeiT's Mixup/CutMix switch, and with TokenMix (teacher
activation-map labels) — then prints their top-1 side by side, with occlusion top-1.
Everything runs locally with W&B offline; rerunning reuses finished runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["DEMO_STUDENT", "DEMO_TEACHER", "register", "run_demo"]

DEMO_TEACHER = ["model.name=cnn_micro", "schedule.epochs=4", "data.batch_size=64", "optim.lr=2e-3",
                "eval.occlusion=[]", "name=demo-teacher"]
DEMO_STUDENT = ["schedule.epochs=10", "data.batch_size=64", "optim.lr=2e-3"]
DEMO_METHODS: list[tuple[str, list[str]]] = [
    ("no mix", ["mix.method=none"]),
    ("Mixup+CutMix (DeiT)", ["mix.method=cutmix"]),
    ("TokenMix (teacher labels)", ["mix.method=tokenmix", "teacher={teacher}"]),
]


def run_demo(output_root: Path, *, epochs: int | None = None, console: Console | None = None) -> list[dict]:
    """Train the demo's runs (skipping finished ones) and return one row per student."""
    from suite.config import load_config
    from suite.records import RunState
    from suite.trainer import train

    console = console or Console()
    common = [f"run.output_root={output_root}"]
    console.rule("teacher: cnn_micro")
    teacher = train(load_config(None, [*DEMO_TEACHER, *common]))
    if teacher.state is not RunState.FINISHED:
        raise typer.Exit(75)
    console.print(f"teacher top-1 {teacher.summary['top1']:.1f} %  ({teacher.run_dir})")
    rows = []
    for label, method in DEMO_METHODS:
        overrides = [o.format(teacher=teacher.run_dir) for o in method]
        extra = [f"schedule.epochs={epochs}"] if epochs else []
        console.rule(f"student: {label}")
        result = train(load_config(None, [*DEMO_STUDENT, *overrides, *extra, *common, f"name=demo {label}"]))
        if result.state is not RunState.FINISHED:
            raise typer.Exit(75)
        rows.append({"method": label, "run_id": result.run_id, **result.summary})
    return rows


def _table(rows: list[dict]) -> Table:
    table = Table(title="Built-in data, vit_micro_patch4_32 (top-1 %, val)")
    for col in ("method", "top-1", "top-5", "occl. 50 %", "run"):
        table.add_column(col, justify="left" if col in ("method", "run") else "right")
    for row in rows:
        occ = row.get("occ50_top1")
        table.add_row(row["method"], f"{row['top1']:.1f}", f"{row['top5']:.1f}",
                      "-" if occ is None else f"{occ:.1f}", row["run_id"])
    return table


def register(app: typer.Typer) -> None:
    """Attach ``suite demo`` to the CLI."""

    @app.command()
    def demo(
        output_root: Annotated[Path, typer.Option(help="Where the demo's run directories go.")] = Path("runs/demo"),
        epochs: Annotated[int | None, typer.Option(help="Student epochs (default 10).")] = None,
    ) -> None:
        """Run the embedded default: a teacher, then no-mix / CutMix / TokenMix students, and a table."""
        console = Console()
        rows = run_demo(output_root, epochs=epochs, console=console)
        console.print(_table(rows))
        console.print(f"run records: {output_root}/<run_id>/ (config.json, metrics.jsonl, summary.json)")
