"""The ``suite`` command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _suite(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


MALFORMED = [
    (["mix.mask_raito=0.5"], "mix.mask_raito"),
    (["schedule.epochs=many"], "schedule.epochs"),
    (["mix.mask_ratio=1.5"], "mix.mask_ratio"),
    (["data.img_size=30"], "data.img_size"),
    (["model.name=not_a_model"], "model.name"),
    (["mix.method=tokenmix", "teacher.checkpoint=missing.pt"], "teacher.checkpoint"),
]


def test_malformed_config_exits_2_naming_the_field_and_leaves_no_run_dir(tmp_path: Path) -> None:
    """Each malformed command in a process of its own (started together: the processes' start-up
    is most of the time), each exiting 2 with the field named and no run folder made."""
    procs = []
    for n, (overrides, field) in enumerate(MALFORMED):
        out = tmp_path / f"runs{n}"
        cmd = [sys.executable, "-m", "suite.cli", "train", *overrides, f"run.output_root={out}"]
        procs.append((field, out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                   cwd=tmp_path)))
    for field, out, proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (field, stderr)
        assert field in stderr, (field, stderr)
        assert not out.exists(), field


def test_config_show_prints_resolved_config_and_run_id(tmp_path: Path) -> None:
    proc = _suite("config", "show", "--json", "mix.method=tokenmix", "mix.mask_ratio=[0.4,0.6]")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["run_id"].startswith("tokenmix-")
    assert data["config"]["mix"]["token_grid"] == 8 and data["config"]["mix"]["target"] == "area"


def test_train_prints_summary_and_second_call_does_not_retrain(tmp_path: Path, tiny_overrides: list[str]) -> None:
    first = _suite("train", *tiny_overrides)
    assert first.returncode == 0, first.stderr
    assert "top1" in first.stdout
    second = _suite("train", *tiny_overrides)
    assert second.returncode == 0
    assert "starting" not in second.stderr and "resuming" not in second.stderr


def test_help_explains_commands() -> None:
    proc = _suite("--help")
    assert proc.returncode == 0
    for command in ("train", "config"):
        assert command in proc.stdout
    sub = _suite("train", "--help")
    assert "Overrides as dotted key=value" in sub.stdout


def test_messages_with_square_brackets_print_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    # gloo and NCCL errors carry text such as "[/tmp/x.cpp:42]"; rich read it as markup and raised.
    from suite.cli.console import EXIT_INVALID, invalid

    exit_ = invalid("invalid config", "Connection reset [/opt/gloo/pair.cc:589] by [bold]peer")
    assert exit_.exit_code == EXIT_INVALID
    err = capsys.readouterr().err
    assert "[/opt/gloo/pair.cc:589]" in err and "[bold]peer" in err
