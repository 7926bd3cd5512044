"""Test helpers that build small real inputs (no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from suite.run.signals import GracefulStop

# A run small enough for seconds on one CPU core, still a real ViT training on real data
# (key=value overrides; tests/sweeps_tests/sweep_files.py derives a sweep's base from it).
TINY = [
    "data.train_size=256",
    "data.val_size=128",
    "data.batch_size=32",
    "model.depth=1",
    "model.embed_dim=48",
    "schedule.epochs=2",
    "schedule.warmup_epochs=0.5",
    "eval.batch_size=128",
    "eval.occlusion=[0.5]",
    "tracking.mode=disabled",
    "run.threads=1",
]


class StopAfter(GracefulStop):
    """Requests a stop after ``n`` step polls: an interruption at a known step, without timing.

    ``second_ctrl_c``: a Ctrl-C, then at the next poll a second one (the KeyboardInterrupt that
    GracefulStop's handler raises on a second SIGINT).
    """

    def __init__(self, n: int, *, signum: signal.Signals = signal.SIGTERM, second_ctrl_c: bool = False) -> None:
        super().__init__(signals=())
        self.n = n
        self.second = second_ctrl_c
        self.stop_signum = signal.SIGINT if second_ctrl_c else signum

    @property
    def requested(self) -> bool:  # type: ignore[override]
        self.n -= 1
        if self.n < 0:
            if self.second and self.signum is not None:
                raise KeyboardInterrupt
            self.request(self.stop_signum)
            return not self.second
        return False


def make_image_folder(root: Path, classes: int = 3, per_class: tuple[int, int] = (8, 4), size: int = 40) -> Path:
    """Write an ImageNet-style tree of PNGs: a coloured square per class on noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
                y, x = rng.integers(0, size - 12, 2)
                img[y : y + 12, x : x + 12, c] = 255
                Image.fromarray(img).save(folder / f"img_{i}.png")
    return root


def wandb_records(path: Path) -> list[Any]:
    """Every record of a W&B offline ``run-<id>.wandb`` file (wandb's own protobuf ``Record``).

    wandb 0.31 ships no reader; the file is a LevelDB-style log: a 7-byte header (``:W&B``,
    magic 0xBEE1, version), then 32 KiB blocks of chunks, each ``<checksum u32, length u16,
    type u8>`` + data, where type 1 is a full record and 2/3/4 the first/middle/last piece.
    """
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B offline log")
    block, pos, pieces, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pieces = chunk
        elif kind == 3:
            pieces += chunk
        elif kind == 4:
            out.append(pieces + chunk)
            pieces = b""
    return [pb.Record.FromString(raw) for raw in out]


def wandb_history(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The W&B history of a run over all its offline segments: step -> logged values."""
    import json

    history: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            step = int(record.history.step.num)
            history.setdefault(step, {}).update({k: v for k, v in row.items() if not k.startswith("_")})
    return history


FAULTS_HOOK = Path(__file__).resolve().parent / "faults_hook"
REPO = FAULTS_HOOK.parents[1]


def hold_env(folder: Path, at: tuple[int, int], *, signals: int = 1, rank: int | None = None,
             env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that stops after step ``at`` (epoch, step) until signalled.

    See ``tests/faults_hook/sitecustomize.py``: each held process writes ``folder/<pid>``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = dict(os.environ if env is None else env)
    extra = {"FAULT_HOLD_AT": f"{at[0]}:{at[1]}", "FAULT_HOLD_DIR": str(folder), "FAULT_HOLD_SIGNALS": str(signals)}
    if rank is not None:
        extra["FAULT_HOLD_RANK"] = str(rank)
    path = [str(FAULTS_HOOK), str(REPO)] + ([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])
    return {**base, **extra, "PYTHONPATH": os.pathsep.join(path)}


def wait_held(folder: Path, proc: subprocess.Popen, count: int = 1, seconds: float = 240.0) -> list[int]:
    """The pids of ``count`` processes held at their step (see ``hold_env``); fails if they never get there."""
    deadline = time.monotonic() + seconds
    while len(held := sorted(int(p.name) for p in folder.iterdir())) < count:
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {count} held at the step")
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(held)} of {count} process(es) held at the step after {seconds:.0f} s")
        time.sleep(0.05)
    return held


def wait_signalled(folder: Path, pid: int, count: int, seconds: float = 60.0) -> None:
    """Until held process ``pid`` has received ``count`` signals (two signals sent at once may merge)."""
    deadline = time.monotonic() + seconds
    while (folder / str(pid)).read_text().strip() != str(count):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not receive signal {count} within {seconds:.0f} s")
        time.sleep(0.02)


def run_cli(app: Any, *args: object) -> tuple[int, str]:
    """``suite <args>`` in-process: (exit code, output); an exception other than an exit fails the test."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"suite {' '.join(map(str, args))} raised {result.exception!r}\n{result.output}")
    return result.exit_code, result.output


def flat(text: str) -> str:
    """Help and messages as one line: rich's boxes and wrapping taken out."""
    return " ".join(text.replace("\u2502", " ").split())
