"""Sweep values reach the run config as values: no ``key=value`` text on the way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from suite.config import ConfigError, load_config, run_id
from sweeps.expand import expand
from sweeps.spec import load_sweep
from sweeps.values import apply_values, to_override
from tests.sweeps_tests.sweep_files import TINY, write_sweep


def test_apply_values_sets_dotted_keys_on_a_copy() -> None:
    base = {"data": "builtin", "mix": {"method": "tokenmix"}}
    data = apply_values(base, {"data.img_size": 48, "mix.mask_ratio": (0.3, 0.7), "optim.lr": "1e-3",
                               "teacher": "runs/t", "teacher.topk": 5, "run.output_root": Path("/x")})
    assert data == {"data": {"source": "builtin", "img_size": 48},  # the shorthand opens into its section
                    "mix": {"method": "tokenmix", "mask_ratio": [0.3, 0.7]},
                    "optim": {"lr": 1e-3},  # YAML 1.1 reads 1e-3 as text: read as the number
                    "teacher": {"checkpoint": "runs/t", "topk": 5},
                    "run": {"output_root": "/x"}}
    assert base == {"data": "builtin", "mix": {"method": "tokenmix"}}
    with pytest.raises(ConfigError, match="key 'mix..prob' has an empty part"):
        apply_values({}, {"mix..prob": 0.5})


def test_a_sweep_run_has_the_id_of_the_same_run_config_file(tmp_path: Path) -> None:
    """A float inside a value (timm kwargs) stays a float, as in a run config file."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"model": {"kwargs": {"drop_rate": 1.0e-5}}}))
    path = write_sweep(tmp_path, include=[{"model.kwargs": {"drop_rate": 1.0e-5}}])
    (run,) = expand(load_sweep(path)).runs
    assert run.config.model.kwargs == {"drop_rate": 1.0e-5}
    direct = load_config(tmp_path / "run.yaml", [to_override(k, v) for k, v in TINY.items()])
    assert run.run_id == run_id(direct)
