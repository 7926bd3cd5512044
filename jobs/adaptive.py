"""Adaptive seeds: launch, read the finished runs, add seeds only where the interval is wide.

``suite sweep launch FILE --until-ci W [--max-seeds N]`` repeats rounds of:

1. launch the sweep (every run that is not done; on SLURM, wait for the jobs to end);
2. build the report's tables (:func:`analysis.report.all_tables`: the same baseline, pairing by
   seed and 95 % interval of the difference as ``suite report``);
3. for each row compared with a baseline whose interval half-width is above ``W`` points, or not
   defined yet (fewer than 2 pairs, or no spread), and that has fewer than ``N`` seeds, add the
   next unused seed to the row and to its baseline (a comparison pairs seeds);

until no row gets a seed. The decisions are written to ``extra-seeds.json`` in the output root
(:mod:`sweeps.extra_seeds`) before the next round is launched, so ``plan``, ``status`` and
``report`` see the added runs, and a stopped loop started again recomputes the same decisions from
the same finished runs: it trains only what is missing. A round whose runs failed ends the loop
(more seeds cannot fix a failing run).

A sweep without ``seeds:`` has nothing to vary, and is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweeps.extra_seeds import ExtraSeeds, row_key
from sweeps.spec import Sweep, SweepError

__all__ = ["Decision", "Round", "decide", "launch_until_ci"]


@dataclass
class Decision:
    """What one row needs: its seeds now, its widest interval half-width, and the seed it gets (or None)."""

    label: str
    values: dict[str, Any]
    seeds: list[int]
    half_width: float = math.nan
    add: int | None = None
    why: str = ""


@dataclass
class Round:
    """One round of the loop: the launch report and the decisions taken after it."""

    launched: Any
    decisions: dict[str, Decision] = field(default_factory=dict)

    @property
    def added(self) -> int:
        return sum(d.add is not None for d in self.decisions.values())


def _next_seed(taken: set[int]) -> int:
    seed = max(taken, default=-1) + 1
    while seed in taken:
        seed += 1
    return seed


def decide(tables: list[Any], *, width: float, max_seeds: int) -> dict[str, Decision]:
    """Which rows get one more seed, from the report's row tables (see the module docstring).

    A row compared in several tables (a grid's per-axis tables) is judged by its widest interval;
    an undefined interval counts as infinitely wide.
    """
    decisions: dict[str, Decision] = {}
    baseline_of: dict[str, Decision] = {}
    widest: dict[str, float] = {}
    unfinished: set[str] = set()
    for table in tables:
        if table.kind != "rows" or table.conditions is None or "baseline" not in table.data:
            continue
        flags = [bool(b == True) for b in table.data["baseline"]]  # noqa: E712 - numpy bools; NaN is no baseline
        base = next((c for c, flag in zip(table.conditions, flags) if flag), None)
        for cond, flag, (_, row) in zip(table.conditions, flags, table.data.iterrows()):
            key = row_key(cond.values)
            entry = decisions.setdefault(key, Decision(cond.label, dict(cond.values), sorted(cond.run_ids)))
            if flag:
                entry.why = entry.why or "baseline: trains every seed a compared row has"
            if flag or base is None:
                continue
            half = (float(row["ci_high"]) - float(row["ci_low"])) / 2
            widest[key] = max(widest.get(key, -math.inf), math.inf if math.isnan(half) else half)
            if row["unfinished"] > 0:
                unfinished.add(key)
            baseline_of[key] = Decision(base.label, dict(base.values), sorted(base.run_ids))
    wants: dict[str, Decision] = {}
    for key, half in widest.items():
        entry = decisions[key]
        entry.half_width = half if math.isfinite(half) else math.nan
        shown = f"{half:.2f}" if math.isfinite(half) else "– (fewer than 2 pairs, or no spread)"
        if key in unfinished:
            entry.why = "unfinished runs: judged once they have finished"
        elif half <= width:
            entry.why = f"CI half-width {shown} <= {width:g} with {len(entry.seeds)} seeds: done"
        elif len(entry.seeds) >= max_seeds:
            entry.why = f"CI half-width {shown} > {width:g} at the cap of {max_seeds} seeds"
        else:
            entry.add = _next_seed(set(entry.seeds))
            entry.why = f"CI half-width {shown} > {width:g} with {len(entry.seeds)} seeds: seed {entry.add} added"
            wants[key] = entry
    for key, entry in wants.items():  # the baseline trains each seed a compared row has
        base = baseline_of[key]
        target = decisions.setdefault(row_key(base.values), base)
        if entry.add not in target.seeds:
            target.seeds = sorted({*target.seeds, entry.add})
            target.why = "baseline: trains every seed a compared row has"
    for entry in wants.values():
        entry.seeds = sorted({*entry.seeds, entry.add})
    return decisions


def _record(sweep: Sweep, decisions: dict[str, Decision], width: float, max_seeds: int, metric: str) -> None:
    """Write the rows' seeds beyond the sweep's ``seeds:`` and the reasons to ``extra-seeds.json``."""
    record = ExtraSeeds.read(sweep.output_root)
    base = set(sweep.spec.seeds or [])
    record.target = {"width": width, "max_seeds": max_seeds, "metric": metric}
    for key, entry in decisions.items():
        old = set(record.rows.get(key, {}).get("seeds", []))
        extra = sorted((set(entry.seeds) | old) - base)
        half = None if math.isnan(entry.half_width) else round(entry.half_width, 4)
        record.rows[key] = {"label": entry.label, "seeds": extra, "half_width": half, "why": entry.why}
    record.write()


def launch_until_ci(
    load: Callable[[], Sweep],
    *,
    width: float,
    max_seeds: int,
    metric: str = "top1",
    overrides: list[str] | None = None,
    launch: Callable[..., Any] | None = None,
    say: Callable[[str], None] | None = None,
    **launch_options: Any,
) -> list[Round]:
    """Run the adaptive-seed loop (module docstring); returns its rounds.

    Args:
        load: loads the sweep (called every round: it reads the extra seeds decided so far).
        width: the largest acceptable half-width of a row's 95 % interval of Δ, in ``metric`` units.
        max_seeds: the most seeds a row gets.
        metric: the summary metric the intervals are of (the report's ``--metric``).
        overrides: the run config overrides the sweep was loaded with (for the report's plan).
        launch: :func:`jobs.launch.launch` (a parameter for the CLI's signal handling).
        **launch_options: passed to ``launch`` (executor, max_parallel, poll_s, check_paths).

    Raises:
        SweepError: the sweep has no ``seeds:``, or ``width``/``max_seeds`` make no sense.
    """
    from analysis.report import all_tables, collect

    if launch is None:
        from jobs.launch import launch
    say = say or (lambda line: None)
    if not width > 0:
        raise SweepError(f"--until-ci must be a positive width in points, but got {width}")
    rounds: list[Round] = []
    while True:
        sweep = load()
        if not sweep.spec.seeds:
            raise SweepError(f"{sweep.path}: --until-ci adds seeds, but the sweep has no seeds: list")
        if max_seeds < len(sweep.spec.seeds):
            raise SweepError(f"--max-seeds {max_seeds} is below the sweep's {len(sweep.spec.seeds)} seeds")
        launched = launch(sweep, wait=True, echo=say, **launch_options)
        current = Round(launched)
        rounds.append(current)
        if launched.failed():
            say(f"{len(launched.failed())} run(s) failed: no seeds added (suite sweep status {sweep.path} shows why)")
            return rounds
        collection = collect([sweep.path], overrides=overrides or [], output_root=sweep.output_root,
                             cache=False, curves=False)
        current.decisions = decide(all_tables(collection, metric=metric), width=width, max_seeds=max_seeds)
        _record(sweep, current.decisions, width, max_seeds, metric)
        for entry in current.decisions.values():
            if entry.why:
                say(f"{entry.label}: {entry.why}")
        if not current.added:
            return rounds
        say(f"round {len(rounds)}: {current.added} row(s) get a seed; launching them")
