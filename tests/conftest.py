"""Shared fixtures. Tests never touch the network: hub and W&B are forced offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import suite  # noqa: E402,F401 - torchvision shim before timm
from tests.helpers import TINY  # noqa: E402 - re-exported: one tiny run for every test

torch.set_num_threads(min(2, torch.get_num_threads()))



REAL_COMPONENT_MARKERS = ("slurm", "latex")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "latex: compiles with a real pdflatex (`make latex`)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On CI (``CI=true``) a skipped real-component test (SLURM, pdflatex) is a failure.

    Those tests skip where the component cannot run; CI must run them, so a skip there means
    the run checked less than it claims.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    marker = next((m for m in REAL_COMPONENT_MARKERS if item.get_closest_marker(m)), None)
    if marker is None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI=true: the {marker} test {item.nodeid} was skipped ({reason}); on CI it must run"


@pytest.fixture(scope="session")
def cli():  # noqa: ANN201 - a typer app
    """The ``suite`` app with its command groups (sweep, tune, report), registered once per session.

    ``suite`` registers them from the package's entry points at start-up; registering them again
    on the same global app per call would stack duplicate groups.
    """
    from suite.cli.main import app, register_command_groups

    if not any(group.name == "sweep" for group in app.registered_groups):
        register_command_groups(app)
    return app


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """Overrides for a seconds-long training into a fresh output root."""
    return [*TINY, f"run.output_root={tmp_path / 'runs'}"]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageNet-layout tree (train/ and val/, 3 classes) of real PNG files."""
    from tests.helpers import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture
def teacher_run(tiny_overrides: list[str]) -> Path:
    """A finished one-epoch cnn_micro run, to be used as a TokenMix teacher."""
    from suite.config import load_config
    from suite.run.records import RunState
    from suite.train.trainer import train

    teacher = ["model.name=cnn_micro", "eval.occlusion=[]", "schedule.epochs=1"]
    result = train(load_config(None, [*tiny_overrides, *teacher]))
    assert result.state is RunState.FINISHED
    return result.run_dir
