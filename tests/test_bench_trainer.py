"""The GPU step benchmark stays runnable: its dry run works on CPU and prints the full table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_case_dry_run_prints_every_row() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_trainer.py"), "--case", "gpu", "--dry-run",
         "--threads", "1"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("vit_micro_patch4_32, 32 px, batch 16")
    assert "1 warmup steps, then 2 timed steps" in lines[0]
    assert "| step | ms/step | img/s | vs bare / share |" in lines
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| ")][1:]
    assert rows == [
        "bare forward + backward + AdamW, batch on the device",
        "suite step, TokenMix (one mask per batch), batch on the device",
        "suite step, TokenMix, batch in pinned host memory (copy included)",
        "TokenMix alone (host masks, device blend and targets)",
        "suite step, paper recipe (mix.groups=8, Mixup/TokenMix switch, EMA, BCE, drop path 0.1), "
        "batch on the device",
    ]
    bare = next(line for line in lines if line.startswith("| bare"))
    assert bare.endswith("| 1.000 |")  # the reference row; the others are ratios to it
    assert next(line for line in lines if line.startswith("| TokenMix alone")).endswith("% of the step |")


def test_gpu_case_without_cuda_points_to_the_dry_run() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real case")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_trainer.py"), "--case", "gpu"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 2 and "--dry-run" in result.stderr


def _cuda() -> bool:
    import suite  # noqa: F401 - torchvision shim
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda(), reason="on a CUDA machine gpu.sh measures instead of refusing")
def test_gpu_script_parses_and_refuses_without_cuda() -> None:
    script = REPO / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**__import__("os").environ, "PY": sys.executable})
    assert result.returncode == 2 and "--dry-run runs it in miniature" in result.stderr
    assert result.stdout == ""  # nothing measured, nothing printed as if it were a result
