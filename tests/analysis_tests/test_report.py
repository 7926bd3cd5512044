"""Tables from run records whose metrics are known: every number checked against an independent computation."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from analysis.render import to_csv
from analysis.report import all_tables, collect, write_report
from tests.analysis_tests.run_records import plan_of, write_run, write_sweep

SEEDS = [0, 1, 2]
BASE = [50.0, 52.0, 51.0]
PLUS = [55.0, 58.5, 54.0]
MINUS = [49.0, 50.5, 51.5]


@pytest.fixture
def methods(tmp_path: Path) -> Path:
    """An include-only sweep (one row per method), all nine runs finished with known top-1."""
    path = write_sweep(
        tmp_path, "methods",
        include=[{"mix.method": "none"}, {"mix.method": "cutmix"}, {"mix.method": "mixup"}], seeds=SEEDS,
    )
    plan = plan_of(path)
    for cond, values in zip(plan.conditions, (BASE, PLUS, MINUS)):
        for seed, value in zip(SEEDS, values):
            write_run(plan, cond.run_ids[seed], value, occ50=value - 20, gpu_hours=0.5)
    return path


def _table(path: Path):  # noqa: ANN202 - analysis._tables.Table
    from analysis.report import all_tables

    tables = all_tables(collect([path], cache=False))
    assert len(tables) == 1
    return tables[0]


def test_methods_table_numbers_equal_independent_values(methods: Path) -> None:
    table = _table(methods)
    data = table.data
    assert list(data["label"]) == ["no mixing", "CutMix", "Mixup"]  # sweep order, readable names
    for i, values in enumerate((BASE, PLUS, MINUS)):
        assert data.loc[i, "top1_mean"] == pytest.approx(statistics.mean(values))
        assert data.loc[i, "top1_std"] == pytest.approx(statistics.stdev(values))
        assert data.loc[i, "top1_n"] == 3
        assert data.loc[i, "occ50_top1_mean"] == pytest.approx(statistics.mean(values) - 20)
        assert data.loc[i, "gpu_hours"] == pytest.approx(1.5)
    pvalues = {}
    for i, values in ((1, PLUS), (2, MINUS)):
        test = sps.ttest_rel(values, BASE)
        diffs = np.subtract(values, BASE)
        pvalues[i] = test.pvalue
        assert data.loc[i, "delta"] == pytest.approx(diffs.mean())
        assert data.loc[i, "diff_sd"] == pytest.approx(statistics.stdev(diffs))
        assert data.loc[i, "p"] == pytest.approx(test.pvalue, rel=1e-9)
        assert data.loc[i, "pairs"] == 3
        low, high = sps.t.interval(0.95, 2, loc=diffs.mean(), scale=statistics.stdev(diffs) / np.sqrt(3))
        assert (data.loc[i, "ci_low"], data.loc[i, "ci_high"]) == pytest.approx((low, high))
        assert data.loc[i, "ci_interval"] == "t"
    # Holm over the two comparisons: the smaller p doubled, the larger one kept (or raised to it)
    small, large = sorted(pvalues, key=pvalues.get)
    assert data.loc[small, "p_holm"] == pytest.approx(2 * pvalues[small])
    assert data.loc[large, "p_holm"] == pytest.approx(max(pvalues[large], 2 * pvalues[small]))
    # one run's measurement error: 400 validation images (config data.val_size), top-1 at the row mean
    assert list(data["n_val"]) == [400, 400, 400] and "data.val_size" in data.loc[0, "n_val_from"]
    base_p = statistics.mean(BASE) / 100
    assert data.loc[0, "top1_binomial_se"] == pytest.approx(100 * (base_p * (1 - base_p) / 400) ** 0.5)
    assert "binomial SE 2.5 points" in table.note and "400 images" in table.note
    # the cells say the same, the best mean is bold, the caption names test, interval, correction and n
    assert table.rows[1][1] == f"{statistics.mean(PLUS):.1f} ± {statistics.stdev(PLUS):.1f}"
    assert table.rows[1][table.header.index("p")] == f"{sps.ttest_rel(PLUS, BASE).pvalue:.3f}"
    assert table.rows[1][table.header.index("p (Holm)")] == f"{data.loc[1, 'p_holm']:.3f}"
    assert (1, 1) in table.bold and (0, 1) not in table.bold
    assert table.rows[0][table.header.index("Δ top-1")] == "baseline"
    caption = table.caption
    assert "final-epoch top-1" in caption.lower() and "paired t-test" in caption
    assert "Student t interval" in caption and "Holm" in caption and "over the 2 comparisons" in caption
    assert "n = 3 pairs for every compared row" in caption


def test_row_with_identical_differences_shows_no_p_and_no_ci(tmp_path: Path) -> None:
    """Every seed exactly +1 over the baseline: "–" for p, p (Holm) and the CI, NaN in the CSV."""
    path = write_sweep(tmp_path, "same", include=[{"mix.method": "none"}, {"mix.method": "cutmix"}], seeds=SEEDS)
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed, value in zip(SEEDS, BASE):
            write_run(plan, cond.run_ids[seed], value + cond.index)
    table = _table(path)
    row = dict(zip(table.header, table.rows[1]))
    assert row["Δ top-1"] == "+1.0" and row["p"] == "–" and row["p (Holm)"] == "–" and row["95 % CI"] == "–"
    frame = pd.read_csv(io.StringIO(to_csv(table)))
    assert frame.loc[1, "delta"] == pytest.approx(1.0)
    assert frame.loc[1, ["p", "p_holm", "ci_low", "ci_high", "seeds_needed"]].isna().all()


def test_a_bootstrap_only_from_ten_pairs_named_in_caption_and_csv(tmp_path: Path) -> None:
    """10 seeds: CutMix has 10 pairs (BCa bootstrap), Mixup's last seed is unfinished (9 pairs, t interval)."""
    seeds = list(range(10))
    path = write_sweep(tmp_path, "many", include=[{"mix.method": "none"}, {"mix.method": "cutmix"},
                                                  {"mix.method": "mixup"}], seeds=seeds)
    plan = plan_of(path)
    rng = np.random.default_rng(7)
    for cond in plan.conditions:
        for seed in seeds:
            unfinished = cond.index == 2 and seed == 9
            write_run(plan, cond.run_ids[seed], None if unfinished else 50.0 + cond.index + float(rng.normal()))
    table = _table(path)
    assert list(table.data["pairs"]) == [10, 10, 9]
    assert list(table.data["ci_interval"]) == ["", "BCa bootstrap", "t"]
    assert "Student t interval" in table.caption and "fewer than 10 pairs" in table.caption
    assert "BCa bootstrap of Δ (scipy.stats.bootstrap, 9,999 resamples) for rows with 10 or more" in table.caption


def test_seeds_needed_for_the_chosen_effect(tmp_path: Path) -> None:
    """Differences +1, +3, +5 (sd 2): a true Δ of 1 point needs 34 seeds at 80 % power (see
    test_stats for the hand computation); 2 points (d = 1) need 10."""
    path = write_sweep(tmp_path, "power", include=[{"mix.method": "none"}, {"mix.method": "cutmix"}], seeds=SEEDS)
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed, value, diff in zip(SEEDS, BASE, (1.0, 3.0, 5.0)):
            write_run(plan, cond.run_ids[seed], value + diff * cond.index)
    table = _table(path)
    frame = pd.read_csv(io.StringIO(to_csv(table)))
    assert frame.loc[1, "diff_sd"] == pytest.approx(2.0) and frame.loc[1, "seeds_needed"] == 34
    assert frame.loc[1, "effect"] == 1.0
    assert "Seeds needed to detect a true Δ of 1 point of top-1 with 80 % power" in table.note
    assert "CutMix: 34" in table.note
    two = all_tables(collect([path], cache=False), effect=2.0)[0]
    assert two.data.loc[1, "seeds_needed"] == 10 and "2 points of top-1" in two.note and "CutMix: 10" in two.note


def test_rows_with_a_teacher_file_are_named_without_paths(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "teacher_cnn.yaml").write_text(yaml.safe_dump(
        {"name": "teacher", "model": {"name": "cnn_micro"}, "data": {"source": "builtin"},
         "mix": {"method": "none"}, "schedule": {"epochs": 1}, "tracking": {"mode": "disabled"}}))
    path = write_sweep(tmp_path, "methods", include=[
        {"mix.method": "none"}, {"mix.method": "tokenmix", "mix.target": "area"},
        {"mix.method": "tokenmix", "mix.target": "teacher_norm", "teacher": "@base/teacher_cnn.yaml"}], seeds=[0])
    labels = [c.label for c in plan_of(path).conditions]
    assert labels == ["no mixing", "TokenMix · area labels", "TokenMix · teacher: teacher_cnn · teacher_norm"]


def test_corrupt_and_missing_runs_are_listed_and_change_no_other_row(methods: Path) -> None:
    before = _table(methods).data
    plan = plan_of(methods)
    corrupt = plan.conditions[1].run_ids[2]
    missing = plan.conditions[2].run_ids[0]
    (plan.output_root / corrupt / "summary.json").write_text('{"top1": 55.0, "status": "fini')
    import shutil

    shutil.rmtree(plan.output_root / missing)
    collection = collect([methods], cache=False)
    problems = collection.problems().set_index("run_id")
    assert problems.loc[corrupt, "state"] == "corrupt"
    assert "summary.json" in problems.loc[corrupt, "problem"] and "launch" in problems.loc[corrupt, "problem"]
    assert problems.loc[missing, "state"] == "missing"
    after = _table(methods).data
    assert after.loc[0].equals(before.loc[0])  # the baseline row is untouched
    assert after.loc[1, "top1_mean"] == pytest.approx(statistics.mean(PLUS[:2]))
    assert after.loc[2, "top1_mean"] == pytest.approx(statistics.mean(MINUS[1:]))
    report = write_report(collection, methods.parent / "report", formats=("md",))
    index = report.index.read_text()
    assert corrupt in index and missing in index and "corrupt" in index and "missing" in index


def test_row_with_one_of_three_seeds_finished_is_marked(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "ratio", axes={"mix.mask_ratio": [0.3, 0.7]}, mode="one_at_a_time", seeds=SEEDS)
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed in SEEDS:
            finished = cond.label != "mix.mask_ratio=0.7" or seed == 1
            write_run(plan, cond.run_ids[seed], 50.0 + seed if finished else None)
    table = _table(path)
    labels = [row[0] for row in table.rows]
    assert labels == ["0.3", "0.5714 (base)", "0.7"]  # the base value sits in axis order
    marked = table.rows[2][table.header.index("n")]
    assert marked == "1/3 †"
    assert table.data.loc[2, "top1_n"] == 1 and table.data.loc[2, "unfinished"] == 2
    assert table.data.loc[2, "unfinished_states"] == "interrupted"
    assert table.rows[0][table.header.index("n")] == "3/3"
    assert "† = not all seeds finished" in table.caption


def test_grid_sweep_gets_a_pivot_and_a_row_table(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "grid", axes={"mix.mask_ratio": [0.3, 0.7], "mix.prob": [0.5, 1.0]}, seeds=[0, 1])
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            write_run(plan, rid, 40.0 + 10 * cond.values["mix.mask_ratio"] + cond.values["mix.prob"] + seed)
    from analysis.report import all_tables

    pivot, rows = all_tables(collect([path], cache=False))
    assert pivot.kind == "pivot" and pivot.header == ["mix.mask_ratio \\ mix.prob", "0.5", "1.0"]
    assert pivot.rows[1][2] == "48.5 ± 0.7 (2)"  # 40 + 7 + 1 + mean(0, 1)
    assert (1, 2) in pivot.bold
    assert len(rows.rows) == 4 and rows.rows[0][rows.header.index("Δ top-1")] == "baseline"
    flipped = all_tables(collect([path], cache=False), pivot=("mix.prob", "mix.mask_ratio"))[0]
    assert flipped.header == ["mix.prob \\ mix.mask_ratio", "0.3", "0.7"] and flipped.rows[1][2] == "48.5 ± 0.7 (2)"
    from sweeps.spec import SweepError

    with pytest.raises(SweepError, match="has no axis mix.grid; its axes: mix.mask_ratio, mix.prob"):
        all_tables(collect([path], cache=False), pivot=("mix.grid", "mix.prob"))


def test_cache_rereads_only_changed_runs(methods: Path) -> None:
    first = collect([methods])
    assert (first.cache_hits, first.cache_misses) == (0, 9)
    second = collect([methods])
    assert (second.cache_hits, second.cache_misses) == (9, 0)
    plan = plan_of(methods)
    write_run(plan, plan.conditions[0].run_ids[0], 70.0)
    third = collect([methods])
    assert (third.cache_hits, third.cache_misses) == (8, 1)
    assert third.frame.set_index("run_id").loc[plan.conditions[0].run_ids[0], "top1"] == 70.0


def test_cache_writable_by_others_is_not_loaded(methods: Path) -> None:
    collect([methods])
    plan = plan_of(methods)
    for name in (".report-cache.pkl", ".report-rows.pkl", ".report-plan.pkl"):
        (plan.output_root / name).chmod(0o666)
    again = collect([methods])
    assert (again.cache_hits, again.cache_misses) == (0, 9)  # rebuilt from the records, not unpickled


def test_runs_frame_columns(methods: Path) -> None:
    frame = collect([methods], cache=False).frame
    for column in ("run_id", "sweep", "condition", "label", "seed", "state", "problem", "source", "top1",
                   "occ50_top1", "gpu_hours", "cfg.mix.method"):
        assert column in frame.columns
    assert len(frame) == 9 and set(frame["state"]) == {"finished"}


def test_a_run_shared_by_two_sweeps_has_one_curve(tmp_path: Path) -> None:
    ratio = write_sweep(tmp_path, "ratio", axes={"mix.mask_ratio": [0.3]}, mode="one_at_a_time", seeds=[0])
    methods = write_sweep(tmp_path, "methods", include=[{"mix.method": "tokenmix"}], seeds=[0],
                          output_root=str(tmp_path / "runs" / "ratio"))
    plans = [plan_of(ratio), plan_of(methods)]
    shared = plans[1].conditions[0].run_ids[0]
    assert shared == next(c for c in plans[0].conditions if c.is_base).run_ids[0]  # the base run of both
    for plan in plans:
        for cond in plan.conditions:
            write_run(plan, cond.run_ids[0], 50.0)
    collection = collect([ratio, methods], cache=False)
    assert (collection.frame["run_id"] == shared).sum() == 2  # a row in each sweep
    assert (collection.curves["run_id"] == shared).sum() == 3  # one curve of 3 epochs


def test_curves_of_runs_evaluated_every_few_epochs(tmp_path: Path) -> None:
    """eval.every=3: the curve plot has a point per evaluation (mean and std over seeds), not gaps."""
    import json

    from analysis._plots import curve_series

    path = write_sweep(tmp_path, "sparse", include=[{"mix.method": "none"}, {"mix.method": "cutmix"}], seeds=[0, 1])
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            run = write_run(plan, rid, 30.0 + seed, epochs=6)
            rows = [{"epoch": e, "train_loss": 1.0, **({"top1": 10.0 * e + seed} if e % 3 == 0 else {})}
                    for e in range(1, 7)]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    collection = collect([path], cache=False)
    (table,) = [t for t in write_report(collection, tmp_path / "report").tables]
    series = curve_series(table, collection.frame, collection.curves)
    assert [s[0] for s in series] == ["no mixing", "CutMix"]
    for _label, epochs, mean, std, n in series:
        assert list(epochs) == [3.0, 6.0] and list(mean) == [30.5, 60.5] and n == 2
        assert np.allclose(std, [statistics.stdev([30, 31])] * 2)
    assert (tmp_path / "report" / "plots" / f"{table.name}-curves.png").is_file()


def _states(path: Path, *, cache: bool = False) -> dict[str, str]:
    return dict(collect([path], cache=cache).frame[["run_id", "state"]].itertuples(index=False))


def test_states_are_the_suites_where_the_reports_own_rule_was_wrong(methods: Path) -> None:
    """The report reads a run's state with suite.run.records' rule, as sweep plan, status and launch do.

    Its own rule said otherwise, and was wrong, where it compared modification times (a failure
    record older than the checkpoint read as interrupted), took a metrics file for a live process
    (running) and a live process's run for interrupted, counted a summary without run id or top-1 as
    finished, and a finished run whose config.json is damaged as corrupt.
    """
    import os

    from suite.run.records import RunPaths, run_state, write_failure

    plan = plan_of(methods)
    failed, stale, empty = (plan.conditions[1].run_ids[seed] for seed in SEEDS)  # stale: metrics, no checkpoint
    no_config = plan.conditions[0].run_ids[0]
    paths = {rid: RunPaths.of(plan.output_root, rid) for rid in (failed, stale, empty, no_config)}
    for rid in (failed, stale):
        paths[rid].summary.unlink()
    write_failure(paths[failed], RuntimeError("out of memory"))
    paths[failed].checkpoint.write_bytes(b"checkpoint")
    later = paths[failed].failure.stat().st_mtime + 60
    os.utime(paths[failed].checkpoint, (later, later))  # the old rule: checkpoint newer, so interrupted
    paths[empty].summary.write_text("{}")  # the old rule: finished
    paths[no_config].config.write_text("{not json")  # the old rule: corrupt

    states = _states(methods)
    assert states[failed] == "failed" and states[stale] == "new" and states[empty] == "corrupt"
    assert states[no_config] == "finished"  # its summary stands, as README's damaged-records table says
    for rid, path in paths.items():
        assert states[rid] == run_state(path).value, rid
    problems = collect([methods], cache=False).frame.set_index("run_id")["problem"]
    assert "failure.json: RuntimeError: out of memory" in problems[failed]
    assert "config.json" in problems[no_config] and "summary.json" in problems[empty]
    base = _table(methods).data.loc[0]
    assert base["top1_n"] == 3 and base["top1_mean"] == pytest.approx(statistics.mean(BASE))


def test_a_run_whose_lock_is_held_is_running_and_never_cached(methods: Path) -> None:
    from suite.run.records import RunPaths, run_lock

    plan = plan_of(methods)
    rid = plan.conditions[2].run_ids[1]
    paths = RunPaths.of(plan.output_root, rid)
    paths.summary.unlink()
    paths.checkpoint.write_bytes(b"checkpoint")
    assert _states(methods, cache=True)[rid] == "interrupted"  # cached
    with run_lock(paths):  # a trainer takes the run: the lock it writes changes the run's signature
        assert _states(methods, cache=True)[rid] == "running"
    assert _states(methods, cache=True)[rid] == "interrupted"  # its process ended: not a stale "running"
