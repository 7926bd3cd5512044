"""What every ``suite`` command shares: exit codes, consoles, the override arguments, state colours.

Exit codes: 0 success; 1 a run failed (its ``failure.json`` says why); 2 invalid input (nothing
was started or submitted); 75 interrupted by a signal after writing a checkpoint (run the same
command again to resume).

The sweep commands (``sweep plan|launch|status``, ``report``, ``tune`` and ``tune status``) read
their arguments with one grammar (:func:`sweep_args`): the file(s), then dotted ``key=value``
overrides of every run's config and ``resources.<key>=<value>`` overrides of what a run asks the
scheduler for, and one ``--output-root`` option (:data:`OutputRootOpt`) with one meaning: the folder
that holds the run folders and ``sweep-state.json`` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from suite.run.records import RunState

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "OUTPUT_ROOT_HELP",
    "OUTPUT_ROOT_KEY",
    "OutputRootOpt",
    "OverridesArg",
    "RESOURCES_PREFIX",
    "SWEEP_OVERRIDES_HELP",
    "SweepArgs",
    "SweepOverridesArg",
    "console",
    "err_console",
    "invalid",
    "styled_state",
    "load_with_args",
    "sweep_args",
    "with_resources",
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

RESOURCES_PREFIX = "resources."
OUTPUT_ROOT_KEY = "run.output_root"

SWEEP_OVERRIDES_HELP = (
    "Overrides after the file: dotted key=value for every run's config, as for suite train "
    "(e.g. data.root=/datasets/imagenet; they change run ids), and resources.<key>=<value> for what "
    "each run asks the scheduler for (e.g. resources.nodes=2; run ids unchanged). Every sweep, report "
    "and tune command reads them alike: give each the same ones."
)
OUTPUT_ROOT_HELP = (
    "The folder of the run folders and sweep-state.json (a study's journal), used as is: it replaces "
    "the file's output_root (default runs/<name>). Every sweep, report and tune command reads it "
    "alike: give each the same one."
)

SweepOverridesArg = Annotated[Optional[list[str]], typer.Argument(help=SWEEP_OVERRIDES_HELP, show_default=False)]
OutputRootOpt = Annotated[Optional[Path], typer.Option("--output-root", help=OUTPUT_ROOT_HELP, show_default=False)]

_STATE_STYLE: dict[RunState, str] = {
    RunState.NEW: "cyan",
    RunState.PENDING: "blue",
    RunState.RUNNING: "magenta",
    RunState.INTERRUPTED: "yellow",
    RunState.FINISHED: "green",
    RunState.PRUNED: "green",
    RunState.FAILED: "red",
    RunState.CANCELLED: "red",
    RunState.CORRUPT: "bold red",
    RunState.MISSING: "dim cyan",
}


def styled_state(state: RunState) -> str:
    """A run state in its colour (rich markup); the same words in every command."""
    return f"[{_STATE_STYLE[state]}]{state.value}[/]"


def invalid(title: str, err: object) -> typer.Exit:
    """Print ``title`` and the error's lines to stderr; the Exit to raise (code 2)."""
    err_console.print(f"[bold red]{title}[/]\n{escape(str(err))}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INVALID)


@dataclass(frozen=True)
class SweepArgs:
    """The positional arguments of a sweep command, sorted by kind.

    Attributes:
        files: the sweep or study files (or, for ``report``, folders of sweep files), in order.
        overrides: dotted ``key=value`` overrides of every run's config.
        resources: ``resources.<key>=<value>`` overrides of what each run asks the scheduler for.
    """

    files: tuple[Path, ...]
    overrides: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()


def sweep_args(items: Sequence[str | Path], *, title: str, several: bool = False) -> SweepArgs:
    """Sort a sweep command's positional arguments: an argument with ``=`` is an override, any other a file.

    Args:
        items: the arguments as given, the first file first.
        title: the heading of the error (``invalid sweep``, ``invalid study``, ...).
        several: whether the command takes several files (``sweep plan``, ``report``).

    Raises:
        typer.Exit: (code 2, the reason printed) a second file where one is taken, or
            ``run.output_root=``: a sweep sets its runs' output root itself, from ``--output-root``.
    """
    texts = [str(item) for item in items]
    files = tuple(Path(text) for text in texts if "=" not in text)
    settings = [text for text in texts if "=" in text]
    if not several and len(files) > 1:
        raise invalid(title, f"{files[1]}: one file is taken here; an override is a dotted key=value")
    for item in settings:
        if item.partition("=")[0].strip() == OUTPUT_ROOT_KEY:
            raise invalid(title, f"{item}: a sweep puts its runs in its own output root; give --output-root "
                                 f"{item.partition('=')[2].strip() or 'DIR'} instead (run folders and "
                                 "sweep-state.json go to that folder itself, for every sweep command alike)")
    resources = tuple(item for item in settings if item.startswith(RESOURCES_PREFIX))
    return SweepArgs(files, tuple(item for item in settings if item not in resources), resources)


Model = TypeVar("Model")


def with_resources(resources: Model, items: Sequence[str]) -> Model:
    """``resources`` (a sweep's or study's resources model) with ``resources.<key>=<value>`` items applied.

    Values are YAML. They change what a run asks the scheduler for, never a run id. When
    ``gpus_per_node`` is overridden alone, a ``tasks_per_node`` equal to the current
    ``gpus_per_node`` follows it (one process per GPU).

    Raises:
        ValueError: an unknown key, a value that is not YAML, or a result the model refuses; the
            message names the item.
    """
    import yaml
    from pydantic import ValidationError

    model = type(resources)
    current = resources.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    updates: dict[str, Any] = {}
    for item in items:
        key, _, text = item[len(RESOURCES_PREFIX):].partition("=")
        if key not in model.model_fields:  # type: ignore[attr-defined]
            raise ValueError(f"command-line override {item}: unknown resources key {key!r}; valid keys: "
                             + ", ".join(model.model_fields))  # type: ignore[attr-defined]
        try:
            updates[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"command-line override {item}: not a YAML value ({err})") from None
    default_gpus = model.model_fields["gpus_per_node"].default  # type: ignore[attr-defined]
    if "gpus_per_node" in updates and "tasks_per_node" not in updates and (
        current.get("tasks_per_node") == current.get("gpus_per_node", default_gpus)
    ):
        current.pop("tasks_per_node", None)
    try:
        return model.model_validate({**current, **updates})  # type: ignore[attr-defined]
    except ValidationError as err:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'resources'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ValueError(f"command-line override {' '.join(items)}: {reasons}") from None


Loaded = TypeVar("Loaded")


def load_with_args(
    load: Callable[..., Loaded], args: SweepArgs, output_root: Path | None, *, title: str,
    errors: tuple[type[Exception], ...],
) -> Loaded:
    """``load(file, overrides, output_root=...)`` of the first file (a sweep's or a study's), with the
    ``resources.<key>=<value>`` arguments applied to its resources.

    Raises:
        typer.Exit: (code 2, the reason printed under ``title``) the file or an override is
            invalid, i.e. ``load`` raised one of ``errors``, or a resources override is refused.
    """
    try:
        loaded = load(args.files[0], list(args.overrides), output_root=output_root)
        return _with_resource_overrides(loaded, args.resources)
    except (*errors, ValueError) as err:
        raise invalid(title, err) from None


def _with_resource_overrides(loaded: Loaded, items: Sequence[str]) -> Loaded:
    """A loaded sweep or study (a dataclass with ``path`` and ``spec.resources``) with
    ``resources.<key>=<value>`` items applied to its resources (see :func:`with_resources`).

    Raises:
        ValueError: the reason, after the file's path.
    """
    if not items:
        return loaded
    spec = loaded.spec  # type: ignore[attr-defined]
    try:
        resources = with_resources(spec.resources, items)
    except ValueError as err:
        raise ValueError(f"{loaded.path}: {err}") from None  # type: ignore[attr-defined]
    return dataclasses.replace(loaded, spec=spec.model_copy(update={"resources": resources}))  # type: ignore[type-var]
