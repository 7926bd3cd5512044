"""``make demo``: the miniature paper ablation, trained on this machine, then its report.

Runs the five ``sweeps/demo/`` ablations of the paper on the built-in data — methods (no mix,
Mixup, CutMix, TokenMix with area and with teacher labels), mask ratio, token grid, teacher
choice (none, the CNN teacher online, its offline maps) and mixing probability — with the
local executor, then writes the report (``suite report``) for all five. All sweeps share one
output root, so a run that two sweeps plan (the base TokenMix run is in four of them) trains
once, and the CNN teacher the methods and teacher sweeps need trains first, once, followed by
the maps build step of the teacher sweep. A rerun reuses every finished run and only rewrites
the report.

The regime is data-limited on purpose (100 training images, 64 epochs): without mixing the
ViT fits its training images and stops improving, which is where augmentation matters. Top-1
is measured at the last epoch on 8,000 validation images; the methods sweep runs 5 seeds, the
others 2. It takes about 14 minutes on 2 CPU cores, install included (README, "What the demo
shows").

Stopping it (Ctrl-C, SIGTERM) lets every started run checkpoint, then prints one line saying
how to resume (run ``make demo`` again) and exits 75 (``EXIT_INTERRUPTED``).

Usage::

    python -m jobs.demo [--output-root runs/demo] [--report reports/demo] [-j N]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import sweeps
from suite.cli.console import EXIT_FAILED, EXIT_INTERRUPTED, invalid

__all__ = ["DEMO_SWEEPS", "demo_files", "register", "run_demo"]

DEMO_FOLDER = Path(sweeps.__file__).resolve().parent / "demo"
DEMO_SWEEPS: tuple[str, ...] = ("methods", "mask_ratio", "token_grid", "teacher", "mix_prob")
_ENDED = {"done", "finished", "failed", "cancelled", "interrupted", "pruned", "blocked"}
_COLOURS = {"interrupted": "yellow"}  # resumable, not a failure; every other unfinished word is red
RESUME_HINT = "rerun `make demo` (or the same `python -m jobs.demo` command) to resume; finished runs are kept"


def demo_files(folder: Path = DEMO_FOLDER) -> list[Path]:
    """The demo's sweep files, in report order."""
    return [folder / f"{name}.yaml" for name in DEMO_SWEEPS]


def run_demo(
    output_root: Path,
    report_dir: Path,
    *,
    files: Sequence[Path] | None = None,
    max_parallel: int | None = None,
    console: Console | None = None,
) -> tuple[int, Path]:
    """Launch the demo sweeps locally (skipping finished runs), then write their report.

    Args:
        output_root: where every run directory goes (shared by the sweeps).
        report_dir: the report folder.
        files: sweep files (default: the five of ``sweeps/demo``).
        max_parallel: runs at once (default: one per CPU core).
        console: where progress goes.

    Returns:
        ``(failed run count, path of index.md)``.
    """
    from analysis.render import print_tables
    from analysis.report import collect, write_report
    from jobs.launch import launch
    from suite.run.records import read_run
    from sweeps.expand import expand
    from sweeps.spec import load_sweep

    console = console or Console()
    files = list(files or demo_files())
    loaded = [load_sweep(path, output_root=output_root) for path in files]
    unique: set[str] = set()
    for sweep in loaded:
        unique |= {run.run_id for run in expand(sweep, check_paths=False).all_runs()}
    done_before = sum(1 for rid in unique if read_run(output_root / rid, metrics=False).state.is_finished())
    failed: set[str] = set()
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("demo runs", total=len(unique), completed=done_before)
        for sweep in loaded:
            bar.update(task, description=f"demo runs ({sweep.name})")

            def echo(line: str, sweep_name: str = sweep.name) -> None:
                word, _, rest = line.partition(" ")
                if word == "started":
                    bar.console.print(f"[dim]started[/] {sweep_name}: {rest.strip()}", highlight=False)
                elif word == "new":  # stopped before it began training
                    bar.console.print(f"[yellow]not started[/] {sweep_name}: {rest.strip()}", highlight=False)
                if word in _ENDED:
                    bar.advance(task)
                    rid = rest.split()[0] if rest.split() else ""
                    if word not in ("done", "finished"):
                        if word != "interrupted":
                            failed.add(rid)
                        colour = _COLOURS.get(word, "red")
                        bar.console.print(f"[{colour}]{word}[/] {sweep_name}: {rest.strip()}", highlight=False)

            launch(sweep, executor="local", max_parallel=max_parallel, echo=echo)
    console.print(f"trained {len(unique) - done_before} of {len(unique)} runs in {time.perf_counter() - start:.0f} s")
    collection = collect(files, output_root=output_root)
    report = write_report(collection, report_dir)
    print_tables(report.tables, console)
    console.print(f"report: [bold]{report.index}[/] (tables in md/tex/csv, plots in {report_dir / 'plots'})")
    return len(failed), report.index


def register(app: typer.Typer) -> None:
    """Attach ``suite demo`` (the miniature paper ablation) to the ``suite`` app."""
    app.command("demo")(demo)


def demo(
    output_root: Annotated[Path, typer.Option(help="Where the demo's run directories go.")] = Path("runs/demo"),
    report: Annotated[Path, typer.Option(help="The report folder.")] = Path("reports/demo"),
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Runs at once (default: one per core).")] = None,
    sweep: Annotated[
        list[Path] | None, typer.Option("--sweep", hidden=True, help="Sweep files in place of the demo's (tests).")
    ] = None,
) -> None:
    """Train the miniature paper ablation (5 sweeps, 5 or 2 seeds) and write its report; reruns reuse runs."""
    from jobs.stop import LaunchInterrupted, stop_signals_interrupt
    from sweeps.spec import SweepError

    console = Console()
    try:
        with stop_signals_interrupt():  # a stop before the runs start: the same one line
            failed, _ = run_demo(output_root, report, files=sweep or None, max_parallel=jobs, console=console)
    except SweepError as err:
        raise invalid("invalid demo sweep", err) from None
    except (LaunchInterrupted, KeyboardInterrupt) as err:
        raise interrupted(console, err) from None
    if failed:
        raise typer.Exit(EXIT_FAILED)


def interrupted(console: Console, err: BaseException) -> typer.Exit:
    """The one line of a stopped demo (what stopped it, how to resume) and its exit code."""
    why = f" by {err}" if isinstance(err, RuntimeError) and str(err) else ""
    console.print(f"[yellow]demo stopped[/]{why}: every started run checkpointed; {RESUME_HINT}", highlight=False)
    return typer.Exit(EXIT_INTERRUPTED)


def main() -> None:
    """``python -m jobs.demo``."""
    import suite  # noqa: F401 - torchvision shim before anything imports timm

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(demo)
    app(prog_name="python -m jobs.demo")


if __name__ == "__main__":
    sys.exit(main())
