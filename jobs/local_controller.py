"""Starting a local run's submitit controller only once its job folder exists.

submitit's ``LocalExecutor`` (1.5) starts a job's controller process before the submitting
process creates the job's folder (``<folder>/<pid>/``, named by the controller's pid, so it
cannot exist earlier), and the controller opens its log files in that folder at once. On a
loaded machine the controller can get there first and die with ``FileNotFoundError``: the run
never starts and its record says ``missing``. :class:`FolderFirstLocalExecutor` starts
:func:`main` instead, which creates the folder and then runs submitit's own ``Controller``
unchanged. :func:`start_controller` sets the same environment as submitit's function of that
name (the controller reads its settings from it); submitit offers no hook to change only the
command, and its ``setup`` option cannot be used for this: it runs the controller through
``/bin/sh``, and where that is bash the controller is exec'd and takes the wrong pid.

This module sits outside :mod:`jobs.backends` so that ``python -m jobs.local_controller``
imports only submitit (the package ``jobs`` imports nothing), not the launcher's modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import JobPaths
from submitit.local.local import Controller

__all__ = ["FolderFirstLocalExecutor", "main", "start_controller"]


class FolderFirstLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor whose controller creates its job folder before opening its logs."""

    def _submit_command(self, command: str) -> submitit.LocalJob[Any]:
        params = self.parameters
        if params.get("setup"):  # submitit runs setup commands in a shell before its controller; not here
            raise ValueError("FolderFirstLocalExecutor does not run `setup` commands; set the environment instead")
        n_gpus, visible = params.get("gpus_per_node", 0), params.get("visible_gpus", ())
        gpus = range(n_gpus) if visible == () else visible[:n_gpus]
        tasks = params.get("tasks_per_node", 1)
        process = start_controller(
            folder=self.folder,
            command=command,
            tasks_per_node=tasks,
            cuda_devices=",".join(str(k) for k in gpus),
            timeout_min=params.get("timeout_min", 2.0),
            signal_delay_s=params.get("signal_delay_s", 30),
            stderr_to_stdout=params.get("stderr_to_stdout", False),
        )
        return submitit.LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=list(range(tasks)))


def start_controller(
    folder: Path,
    command: str,
    tasks_per_node: int,
    cuda_devices: str,
    timeout_min: float,
    signal_delay_s: int,
    stderr_to_stdout: bool,
) -> subprocess.Popen[bytes]:
    """Start :func:`main` for one job, with the environment submitit's controller reads its settings from."""
    env = dict(os.environ)
    env.update(
        SUBMITIT_LOCAL_NTASKS=str(tasks_per_node),
        SUBMITIT_LOCAL_COMMAND=command,
        SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * timeout_min)),
        SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(signal_delay_s)),
        SUBMITIT_LOCAL_NODEID="0",
        SUBMITIT_LOCAL_JOB_NUM_NODES="1",
        SUBMITIT_STDERR_TO_STDOUT="1" if stderr_to_stdout else "",
        SUBMITIT_EXECUTOR="local",
        CUDA_VISIBLE_DEVICES=cuda_devices,
        SUBMITIT_LOCAL_WITH_SHELL="",
    )
    return subprocess.Popen([sys.executable, "-m", __name__, str(folder)], env=env)  # noqa: S603


def main(folder: str) -> None:
    """Create the job folder the controller is about to write its logs in, then run the controller."""
    controller = Controller(Path(folder))
    JobPaths(folder, job_id=controller.pid).folder.mkdir(parents=True, exist_ok=True)
    controller.run()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.executable} -m {__name__} <submitit folder>")
    main(sys.argv[1])
