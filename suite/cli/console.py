"""What every ``suite`` command shares: exit codes, consoles, the override argument, state colours.

Exit codes: 0 success; 1 a run failed (its ``failure.json`` says why); 2 invalid input (nothing
was started or submitted); 75 interrupted by a signal after writing a checkpoint (run the same
command again to resume).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "OverridesArg",
    "console",
    "err_console",
    "invalid",
    "styled_state",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 75

console = Console()
err_console = Console(stderr=True)

OverridesArg = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Overrides as dotted key=value, e.g. mix.method=tokenmix mix.mask_ratio=0.5 schedule.epochs=5 "
        "(values are YAML: numbers, [lo,hi] lists, null). Shorthands: data=builtin, data=/path/to/imagenet, "
        "teacher=none, teacher=runs/<run_id>, teacher=maps:<dir>.",
        show_default=False,
    ),
]

_STATE_STYLE = {
    "new": "cyan",
    "pending": "blue",
    "running": "magenta",
    "interrupted": "yellow",
    "finished": "green",
    "pruned": "green",
    "failed": "red",
    "cancelled": "red",
    "corrupt": "bold red",
}


def styled_state(state: str) -> str:
    """A run state in its colour (rich markup); the same words in every command."""
    return f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]"


def invalid(title: str, err: object) -> typer.Exit:
    """Print ``title`` and the error's lines to stderr; the Exit to raise (code 2)."""
    err_console.print(f"[bold red]{title}[/]\n{escape(str(err))}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INVALID)
