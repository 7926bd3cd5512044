"""W&B public-API runs map to the same columns as run directories.

No W&B server is reachable from the test machines, so these tests use stand-in objects with the
public API's shape (``Api.runs(path, filters=...)`` yielding runs with ``id``, ``state``,
``config``, ``summary_metrics`` and ``scan_history()``), as ``wandb.apis.public.Run`` has them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.report import collect
from tests.analysis_tests.run_records import plan_of, write_run, write_sweep


@dataclass
class FakeRun:
    id: str
    state: str
    config: dict[str, Any]
    summary_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    def scan_history(self) -> list[dict[str, Any]]:
        return list(self.history)


@dataclass
class FakeApi:
    runs_by_group: dict[str, list[FakeRun]]
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def runs(self, path: str, filters: dict[str, Any] | None = None) -> list[FakeRun]:
        self.calls.append((path, dict(filters or {})))
        return self.runs_by_group.get((filters or {}).get("group", ""), [])


def test_wandb_runs_give_the_columns_of_run_directories(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "methods", include=[{"mix.method": "none"}, {"mix.method": "cutmix"}], seeds=[0, 1])
    plan = plan_of(path)
    fake_runs = []
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            top1 = 50.0 + 5 * cond.index + seed
            root = write_run(plan, rid, top1, occ50=top1 - 20, curve=[top1 - 10, top1 - 5, top1])
            summary = pd.read_json(root / "summary.json", typ="series").to_dict()
            config = {"run_id": rid, "mix": {"value": {"method": "tokenmix"}}, "run": {"value": {"seed": 0}},
                      "_wandb": {"value": {"cli_version": "0.31"}}}  # the API's {"value": ...} wrapping
            history = [{"_step": e, "epoch": e, "top1": v, "train_loss": 1.0} for e, v in
                       enumerate([top1 - 10, top1 - 5, top1], start=1)]
            fake_runs.append(FakeRun(rid, "finished", config, {**summary, "_runtime": 3.0}, history))
    fake_runs.append(FakeRun("someone-else", "finished", {}, {"top1": 1.0}))  # not planned: ignored
    last = plan.conditions[1].run_ids[1]
    fake_runs = [r if r.id != last else FakeRun(last, "crashed", r.config, {"top1": 3.0}) for r in fake_runs]
    api = FakeApi({"methods": fake_runs})

    disk = collect([path], cache=False)
    cloud = collect([path], origin="wandb", wandb_path="me/tokenmix", api=api)
    assert api.calls == [("me/tokenmix", {"group": "methods"})]
    d = disk.frame.set_index("run_id")
    c = cloud.frame.set_index("run_id")
    assert c.loc[last, "state"] == "failed" and pd.isna(c.loc[last, "top1"])
    others = [rid for rid in d.index if rid != last]
    for column in ("sweep", "label", "seed", "state", "top1", "occ50_top1", "gpu_hours", "cfg.mix.method"):
        assert list(c.loc[others, column]) == list(d.loc[others, column]), column
    assert "cfg._wandb.cli_version" not in c.columns
    assert set(c["source"]) == {"wandb:me/tokenmix"}
    curves = cloud.curves.sort_values(["run_id", "epoch"])
    assert len(curves) == 3 * 3 and set(curves["epoch"]) == {1.0, 2.0, 3.0}


def test_planned_run_absent_from_wandb_is_missing(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "solo", include=[{"mix.method": "none"}], seeds=[0])
    cloud = collect([path], origin="wandb", wandb_path="me/p", api=FakeApi({}))
    row = cloud.frame.iloc[0]
    assert row["state"] == "missing" and "wandb sync" in row["problem"]


def test_wandb_source_needs_a_path(tmp_path: Path) -> None:
    from sweeps.spec import SweepError

    path = write_sweep(tmp_path, "solo", include=[{"mix.method": "none"}], seeds=[0])
    with pytest.raises(SweepError, match="--wandb-path ENTITY/PROJECT"):
        collect([path], origin="wandb", api=FakeApi({}))


def test_real_public_api_run_objects_map_like_the_stand_ins(tmp_path: Path) -> None:
    """The contract with wandb itself: ``wandb.apis.public.Run`` objects built, without a server, from
    attrs shaped as its GraphQL answer (``config`` and ``summaryMetrics`` as JSON strings, config
    values wrapped in ``{"value": ...}``) give the records the run directories give."""
    import json

    from wandb.apis.public import Run

    from analysis._wandb import map_wandb_run

    path = write_sweep(tmp_path, "solo", include=[{"mix.method": "cutmix"}], seeds=[0])
    plan = plan_of(path)
    rid = plan.conditions[0].run_ids[0]
    root = write_run(plan, rid, 61.5, occ50=40.0, curve=[50.0, 61.5])
    summary = json.loads((root / "summary.json").read_text())
    config = json.loads((root / "config.json").read_text())
    attrs = {
        "id": "UnVuOjE=", "name": rid, "state": "finished", "displayName": rid,
        "config": json.dumps({k: {"value": v, "desc": None} for k, v in config.items()}),
        "summaryMetrics": json.dumps({**summary, "_runtime": 3.0, "_step": 2}),
    }
    run = Run(None, "me", "tokenmix", rid, attrs=attrs)  # no service: a network call would fail
    assert run.id == rid and run.state == "finished"
    cloud = map_wandb_run(run, curves=False, path="me/tokenmix").record
    disk = collect([path], cache=False).frame.set_index("run_id").loc[rid]
    assert cloud.state.value == disk["state"] == "finished"
    assert cloud.summary["top1"] == disk["top1"] == 61.5 and cloud.summary["occ50_top1"] == disk["occ50_top1"]
    assert cloud.config["mix"] == config["mix"] and cloud.config["mix"]["method"] == disk["cfg.mix.method"]
    assert "_runtime" not in cloud.summary
