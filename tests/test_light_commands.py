"""Commands that never touch a model do not load torch (seconds of import on every call)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import sys, atexit
atexit.register(lambda: print("torch loaded" if "torch" in sys.modules else "torch not loaded", file=sys.stderr))
from suite.cli.main import main
sys.argv = ["suite", *sys.argv[1:]]
main()
"""


def _run(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


@pytest.mark.parametrize("args", [["report", "--help"], ["sweep", "plan", "--help"], ["--help"]])
def test_help_does_not_load_torch(args: list[str], tmp_path: Path) -> None:
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "torch not loaded" in done.stderr


def test_sweep_plan_loads_torch_only_to_list_timm_models_once(tmp_path: Path) -> None:
    first = _run(["sweep", "plan", "sweeps/paper/methods.yaml"], tmp_path)
    assert first.returncode == 0, first.stderr
    second = _run(["sweep", "plan", "sweeps/paper/methods.yaml"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "torch not loaded" in second.stderr
    assert second.stdout == first.stdout  # the same plan with the cached model list


def test_an_unknown_model_is_still_named_with_the_cached_list(tmp_path: Path) -> None:
    _run(["sweep", "plan", "sweeps/paper/methods.yaml"], tmp_path)
    done = _run(["sweep", "plan", "sweeps/paper/methods.yaml", "model.name=deit_smal_patch16_224"], tmp_path)
    assert "unknown timm model 'deit_smal_patch16_224'" in done.stdout + done.stderr
