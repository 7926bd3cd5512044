"""Adaptive seeds (`suite sweep launch --until-ci`): more seeds only where the interval is wide."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from analysis._plan import Condition
from analysis._tables import Table
from jobs.adaptive import decide, launch_until_ci
from jobs.launch import launch
from suite.run.records import read_run
from sweeps.expand import expand
from sweeps.extra_seeds import EXTRA_SEEDS_FILE, row_key
from sweeps.spec import SweepError, load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


def _table(rows: list[tuple[str, dict, list[int], bool, float, float]]) -> Table:
    """A report row table: (label, values, seeds, baseline, ci_low, ci_high) per row."""
    conds = [Condition(i, values, label, not values, {s: f"r{i}-{s}" for s in seeds})
             for i, (label, values, seeds, _, _, _) in enumerate(rows)]
    data = pd.DataFrame([{"label": label, "baseline": base, "ci_low": lo, "ci_high": hi, "unfinished": 0,
                          "pairs": len(seeds)} for label, _, seeds, base, lo, hi in rows])
    return Table("s", "s", "t", "c", [], [], data=data, conditions=conds)


def test_only_the_wide_row_and_its_baseline_get_a_seed() -> None:
    table = _table([
        ("none", {"mix.method": "none"}, [0, 1, 2], True, math.nan, math.nan),
        ("wide", {"mix.method": "mixup"}, [0, 1, 2], False, -2.0, 3.0),  # half-width 2.5
        ("narrow", {"mix.method": "cutmix"}, [0, 1, 2], False, 0.5, 1.5),  # half-width 0.5
        ("no spread", {"mix.method": "tokenmix"}, [0, 1, 2], False, math.nan, math.nan),
    ])
    decisions = decide([table], width=1.0, max_seeds=5)
    by = {d.label: d for d in decisions.values()}
    assert by["wide"].add == 3 and by["wide"].seeds == [0, 1, 2, 3] and "2.50 > 1" in by["wide"].why
    assert by["narrow"].add is None and by["narrow"].seeds == [0, 1, 2] and "done" in by["narrow"].why
    assert by["no spread"].add == 3  # an undefined interval is no evidence of a narrow one
    assert by["none"].seeds == [0, 1, 2, 3] and by["none"].why.startswith("baseline")
    capped = decide([table], width=1.0, max_seeds=3)
    assert all(d.add is None for d in capped.values())
    assert "at the cap of 3 seeds" in next(d for d in capped.values() if d.label == "wide").why


def _top1(root: Path, run_id: str) -> float:
    return float(read_run(root / run_id).summary["top1"])


def test_until_ci_trains_more_seeds_where_the_interval_is_wide_and_resumes_without_retraining(
    tmp_path: Path,
) -> None:
    rows = [{"label": "no mixing", "mix.method": "none"}, {"label": "Mixup", "mix.method": "mixup"},
            {"label": "CutMix", "mix.method": "cutmix", "mix.mixup_alpha": 0.0}]
    path = write_sweep(tmp_path, include=rows, seeds=[0, 1, 2], overrides={"schedule.epochs": 1})
    first = launch(load_sweep(path), executor="debug")
    assert not first.failed() and len(first.submitted) == 9
    plan = expand(load_sweep(path), check_paths=False)
    top1: dict[str, dict[int, float]] = {}
    for run in plan.runs:
        label = next(r["label"] for r in rows if r["mix.method"] == run.values["mix.method"])
        top1.setdefault(label, {})[run.values["run.seed"]] = _top1(plan.sweep.output_root, run.run_id)
    halves = {}  # each row against the no-mixing baseline, from the summaries with scipy's t interval
    for label in ("Mixup", "CutMix"):
        diffs = [top1[label][s] - top1["no mixing"][s] for s in (0, 1, 2)]
        sem = stats.sem(diffs)
        halves[label] = math.inf if sem == 0 else stats.t.ppf(0.975, 2) * sem
    ordered = sorted(halves.values())
    width = (ordered[0] + ordered[1]) / 2 if ordered[0] < ordered[1] and math.isfinite(ordered[1]) else (
        ordered[0] / 2 if math.isfinite(ordered[0]) else 1.0)
    wide = {label for label, half in halves.items() if half > width}
    assert wide  # the width is chosen below the widest interval: the loop has work to do

    rounds = launch_until_ci(lambda: load_sweep(path), width=width, max_seeds=4, executor="debug")
    assert len(rounds) == 2 and rounds[0].launched.submitted == []  # round 1 was trained already
    assert len(rounds[1].launched.submitted) == len(wide) + 1  # seed 3 of the wide rows and of the baseline
    record = json.loads((plan.sweep.output_root / EXTRA_SEEDS_FILE).read_text())
    for row in rows:
        entry = record["rows"][row_key({k: v for k, v in row.items() if k != "label"})]
        assert entry["seeds"] == ([3] if row["label"] in wide | {"no mixing"} else []), row["label"]
        assert entry["why"]
    extended = expand(load_sweep(path), check_paths=False)  # plan, status and report see the added runs
    assert len(extended.runs) == 9 + len(wide) + 1

    before = sorted(p.name for p in plan.sweep.output_root.iterdir())
    again = launch_until_ci(lambda: load_sweep(path), width=width, max_seeds=4, executor="debug")
    assert [r.launched.submitted for r in again] == [[]]  # relaunched: nothing trained twice, nothing added
    assert sorted(p.name for p in plan.sweep.output_root.iterdir()) == before


def test_until_ci_needs_seeds_and_a_positive_width(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, axes={"optim.lr": [1e-3]})
    with pytest.raises(SweepError, match="has no seeds"):
        launch_until_ci(lambda: load_sweep(path), width=1.0, max_seeds=3, executor="debug")
    with pytest.raises(SweepError, match="positive width"):
        launch_until_ci(lambda: load_sweep(path), width=0.0, max_seeds=3, executor="debug")
