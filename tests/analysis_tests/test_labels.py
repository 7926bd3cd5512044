"""Row names from the sweep file: ``label:`` on an include entry, ``labels:`` for values, in every output."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from analysis._plots import curve_series
from analysis.render import to_csv
from analysis.report import all_tables, collect, write_report
from tests.analysis_tests.run_records import plan_of, write_run, write_sweep

SEEDS = [0, 1]


def _finish(path: Path) -> None:
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            write_run(plan, rid, 40.0 + 5 * cond.index + seed)


def test_include_labels_and_value_labels_name_the_rows(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path, "methods", seeds=SEEDS,
        include=[{"mix.method": "none"}, {"label": "CutMix (reference recipe)", "mix.method": "cutmix"},
                 {"mix.method": "tokenmix", "mix.target": "area"}],
        labels={"mix.method": {"none": "No mixing", "tokenmix": "TokenMix"}},
    )
    _finish(path)
    expected = ["No mixing", "CutMix (reference recipe)", "TokenMix · area labels"]
    collection = collect([path], cache=False)
    assert list(collection.frame.drop_duplicates("condition")["label"]) == expected
    report = write_report(collection, tmp_path / "report", formats=("md", "tex", "csv", "png"))
    (table,) = report.tables
    assert [row[0] for row in table.rows] == expected
    assert list(pd.read_csv(io.StringIO(to_csv(table)))["label"]) == expected
    assert [series[0] for series in curve_series(table, collection.frame, collection.curves)] == expected
    tex = (tmp_path / "report" / "tables" / "methods.tex").read_text()
    markdown = (tmp_path / "report" / "tables" / "methods.md").read_text()
    for label in ("No mixing", "CutMix (reference recipe)", r"TokenMix $\cdot$ area labels"):
        assert label in tex
    assert all(label in markdown for label in expected)
    assert "to the baseline row (No mixing)" in table.caption
    assert "CutMix (reference recipe): " in table.note and "TokenMix · area labels: " in table.note


def test_value_labels_name_the_rows_of_a_zip_sweep(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path, "zipped", mode="zip", seeds=SEEDS,
        axes={"mix.method": ["cutmix", "tokenmix"], "mix.mask_ratio": [0.5714, [0.3, 0.7]]},
        labels={"mix.mask_ratio": {"[0.3,0.7]": "TokenMix, ratio drawn from [0.3, 0.7]"}},
    )
    _finish(path)
    (table,) = all_tables(collect([path], cache=False))
    assert [row[0] for row in table.rows] == ["CutMix", "TokenMix, ratio drawn from [0.3, 0.7]"]


def test_without_labels_the_default_names_stay(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "plain", seeds=SEEDS, include=[{"mix.method": "none"}, {"mix.method": "cutmix"}])
    _finish(path)
    (table,) = all_tables(collect([path], cache=False))
    assert [row[0] for row in table.rows] == ["no mixing", "CutMix"]


def test_value_labels_name_the_rows_of_an_axis_table(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path, "ratio", mode="one_at_a_time", seeds=SEEDS, axes={"mix.mask_ratio": [0.3, 0.7]},
        labels={"mix.mask_ratio": {0.3: "30 % partner tokens", 0.7: "70 % partner tokens"}},
    )
    _finish(path)
    (table,) = all_tables(collect([path], cache=False))
    assert [row[0] for row in table.rows] == ["30 % partner tokens", "0.5714 (base)", "70 % partner tokens"]
    assert plan_of(path).value_label("mix.mask_ratio", 0.3) == "30 % partner tokens"
