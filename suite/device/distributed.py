"""Data parallelism for the training core: one process per GPU (or per CPU share), one run.

Where the process group comes from, first match wins:

1. ``torchrun`` (or ``suite train --nproc N``): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
   ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``.
2. A submitit job with several tasks (``SUBMITIT_EXECUTOR`` set): submitit's ``JobEnvironment``
   (global rank, local rank, task count; the master is the job's first host and the port is
   derived from the job id, :func:`master_port`; an inherited ``MASTER_PORT`` is not used, set
   ``SUITE_MASTER_PORT`` to choose one).
3. Otherwise one process: every helper here is a no-op and the training core runs exactly the
   single-process code.

``nccl`` on CUDA, each rank on its own GPU (:func:`cuda_index`: ``cuda:<local rank>`` when the
process sees the node's GPUs, ``cuda:0`` when the scheduler bound one GPU to the task);
``gloo`` on CPU. CPU threads: ranks that share one CPU allocation (torchrun, ``--nproc``,
local jobs) divide it; a SLURM task has its own (:meth:`Context.threads`).

The semantics the trainer relies on:

- ``data.batch_size`` is the **global** batch (all ranks together); each rank loads
  ``batch_size / world_size`` images per step (it must divide). The epoch's order is one global
  permutation and rank ``r`` takes positions ``r, r + W, ...``, so the union of the ranks' batches
  of step ``s`` is exactly the single-process batch of step ``s``, with the same per-sample
  augmentation (sample seeds depend on the global position). ``steps_per_epoch`` is
  ``train_size // batch_size`` whatever the world size, and every rank runs that many steps.
- Mixing is per rank, as the reference's per-GPU draws: each rank draws its own switch branch and
  mask for its share of the batch, from a generator seeded by ``(seed, epoch, step, rank)``
  (:func:`step_seed`; rank 0 keeps the single-process seed). Resume therefore stays exact.
- Evaluation shards the validation set by rank without padding and all-reduces the sums, so
  top-1/top-5/loss/occlusion count every validation image exactly once. Occlusion masks are drawn
  for the global evaluation batch and each rank keeps its rows, so the occluded images are those
  of a single-process evaluation (when ``eval.batch_size`` is a multiple of the world size).
- Rank 0 alone writes (its :class:`~suite.run.writer.RunWriter` is enabled, the others are silent),
  holds the run lock and runs the epoch callbacks; a callback's stop reason is broadcast. The
  one exception is a failure: the rank that fails first records it (``failure.json`` names the
  rank), and the others, which then fail at their next collective, keep that record.
- Stops are agreed: every ``run.log_every`` steps (the step loop's existing host read) one
  all-reduce carries the running loss sum and a stop flag, so a signal on any rank stops all ranks
  at the same step boundary, with one checkpoint (rank 0) and one requeue (submitit requeues from
  global rank 0 only). There is no per-step host sync.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "Context",
    "all_reduce_sum",
    "context",
    "cuda_index",
    "environment",
    "launch_local",
    "master_port",
    "shutdown",
    "step_seed",
]

TIMEOUT = timedelta(minutes=30)  # a rank that waits longer than this at a collective fails
PORTS = (20000, 60000)  # rendezvous ports derived from job ids lie in [20000, 60000)
PORT_VARIABLE = "SUITE_MASTER_PORT"


@dataclass(frozen=True)
class Environment:
    """Rank and rendezvous of this process, as the launcher described it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"
    slurm_task: bool = False  # each rank is a SLURM task: its own CPUs, maybe its own GPU


def master_port(job_id: str, env: Mapping[str, str]) -> int:
    """The rendezvous port of a multi-task submitit job.

    ``SUITE_MASTER_PORT`` when set. Otherwise derived from the job id (SLURM's numeric id,
    unique per array task): consecutive ids get consecutive ports, so jobs sharing a node never
    meet on one port unless their ids are 40,000 apart; other ids are hashed. An inherited
    ``MASTER_PORT`` (exported by a login shell or a parent launcher into every job) is ignored:
    it would put every multi-task job of a node on the same port.
    """
    chosen = env.get(PORT_VARIABLE, "").strip()
    if chosen:
        if not chosen.isdigit() or not 0 < int(chosen) < 65536:
            raise ValueError(f"{PORT_VARIABLE}={chosen!r} is not a TCP port (1 to 65535)")
        return int(chosen)
    low, high = PORTS
    if job_id.isdigit():
        return low + int(job_id) % (high - low)
    return random.Random(job_id).randrange(low, high)


def cuda_index(local_rank: int, local_world_size: int, visible: int, *, bound: bool = False) -> int:
    """The CUDA device (among the ``visible`` ones) that a rank trains on.

    - At least as many visible GPUs as ranks on this node: ``cuda:<local rank>``. Every rank
      sees the node's GPUs (torchrun, ``suite train --nproc``, local jobs, srun without GPU
      binding), and local ranks are distinct.
    - Exactly one visible GPU in a SLURM task (``bound``): ``cuda:0``, the GPU that SLURM bound
      to this task (``--gpus-per-task=1``, ``--gpu-bind``; ``CUDA_VISIBLE_DEVICES`` has one entry).
    - Otherwise two ranks would share a GPU (NCCL refuses that): a ValueError. ``local_rank %
      visible`` is deliberately not used: it hides exactly this mistake until the first collective.
    """
    if visible < 1:
        raise ValueError("CUDA was chosen but this process sees no GPU (CUDA_VISIBLE_DEVICES is empty?)")
    if visible >= local_world_size:
        return local_rank
    if visible == 1 and bound:
        return 0
    raise ValueError(
        f"{local_world_size} processes on this node but {visible} GPU(s) visible to each: every process needs "
        "a GPU of its own; ask for one GPU per process (resources.gpus_per_node = tasks per node), or train on "
        "CPU (run.device=cpu)"
    )


def environment() -> Environment:
    """Read the launcher's variables (torchrun first, then a multi-task submitit job)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return Environment(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
            world_size=world,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    if env.get("SUBMITIT_EXECUTOR"):
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            return Environment(
                rank=job.global_rank,
                local_rank=job.local_rank,
                world_size=job.num_tasks,
                local_world_size=max(1, job.num_tasks // job.num_nodes),
                master_addr=job.hostnames[0],
                master_port=master_port(str(job.raw_job_id), env),
                source=f"submitit ({job.cluster})",
                slurm_task=job.cluster == "slurm",
            )
    return Environment()


class Context:
    """This process's place in the run: rank, world size, device; collectives that are no-ops alone."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.rank, self.world_size, self.local_rank = env.rank, env.world_size, env.local_rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """Each rank on its own GPU (:func:`cuda_index`); CPU stays CPU."""
        if self.active and device.type == "cuda":
            device = torch.device("cuda", self.cuda_index())
            torch.cuda.set_device(device)
        return device

    def cuda_index(self) -> int:
        """This rank's CUDA device among those the process sees (:func:`cuda_index`)."""
        return cuda_index(
            self.local_rank, self.env.local_world_size, torch.cuda.device_count(), bound=self.env.slurm_task
        )

    def threads(self) -> int | None:
        """Default torch threads of this rank (None: one process, which takes its whole allocation).

        A rank that is a SLURM task has its own allocation (``SLURM_CPUS_PER_TASK``, bounded by
        its affinity mask). Ranks started by torchrun or ``suite train --nproc`` (inside a SLURM
        task or not) and the tasks of a local job all inherit one allocation, which each would
        take whole: they divide it by the ranks on this node.
        """
        if not self.active:
            return None
        from suite.device.hardware import cpu_allocation

        sharing = 1 if self.env.slurm_task else max(1, self.env.local_world_size)
        return max(1, cpu_allocation() // sharing)

    def check_batch(self, batch_size: int, *, mixing: bool, groups: int | None = None, accum_steps: int = 1) -> int:
        """The per-rank batch of a global ``batch_size``; it must divide (and be even when mixing).

        With ``groups`` (``mix.groups``) and mixing, the per-rank batch must also be a multiple of
        the group size: each process splits its own share of the batch into groups, so a value
        that divides the global batch can still fail on every process (128 with 1,024 images
        over 16 GPUs, 64 each).
        """
        from suite.device.batch_split import per_process_batch

        nodes = max(1, self.world_size // max(1, self.env.local_world_size))
        return per_process_batch(
            batch_size, self.world_size, mixing=mixing, groups=groups, nodes=nodes, accum_steps=accum_steps
        )

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the training step calls: DDP around ``model`` when there are several ranks."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    @contextmanager
    def lock(self, acquire: Callable[[], AbstractContextManager[Any]]) -> Iterator[None]:
        """The run lock, held by rank 0 only (the other ranks train the same run).

        When rank 0 cannot take it (another process trains the run), every rank raises rank 0's
        error instead of waiting for it at the first collective.
        """
        if not self.active:
            with acquire():
                yield
            return
        with ExitStack() as stack:
            error: BaseException | None = None
            if self.is_main:
                try:
                    stack.enter_context(acquire())
                except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                    error = err
            error = self.broadcast(error)
            if error is not None:
                raise error
            yield

    def sync(self, values: Sequence[float | torch.Tensor], device: torch.device) -> list[float]:
        """All-reduce (sum) a few numbers in one collective; one process: the numbers as floats."""
        if not self.active:
            return [float(v) for v in values]
        tensor = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.active:
            return flag
        return self.sync([1.0 if flag else 0.0], device)[0] > 0

    def reduce_meter(self, meter: Mapping[str, float], device: torch.device) -> dict[str, float]:
        """One epoch's sums over all ranks (loss, images, fallbacks); steps and seconds stay rank 0's."""
        out = dict(meter)
        if self.active:
            keys = ("loss_sum", "images", "fallbacks")
            for key, value in zip(keys, self.sync([meter[k] for k in keys], device)):
                out[key] = value if key == "loss_sum" else int(round(value))
        return out

    def own_meter(self, meter: dict[str, float], empty: dict[str, float]) -> dict[str, float]:
        """The share of a checkpointed (global) meter that this rank continues: all of it on rank 0."""
        if not self.active or self.is_main:
            return meter
        return {**empty, "steps": meter["steps"], "seconds": meter["seconds"]}

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


_CONTEXT: Context | None = None


def context(device: str = "auto") -> Context:
    """This process's :class:`Context`; joins the process group on first use when there are several ranks."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    env = environment()
    ctx = Context(env)
    if ctx.active and not dist.is_initialized():
        cuda = torch.cuda.is_available() and device != "cpu"
        if cuda:
            torch.cuda.set_device(ctx.cuda_index())
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank,
            world_size=env.world_size,
            timeout=TIMEOUT,
        )
    _CONTEXT = ctx
    return ctx


def shutdown() -> None:
    """Leave the process group (the end of a data-parallel process)."""
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of every draw of one step on one rank; rank 0 keeps the single-process seed."""
    from suite.run.seeds import derive_seed

    return derive_seed(seed, "step", epoch, step) if rank == 0 else derive_seed(seed, "step", epoch, step, rank)


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum numbers over the ranks of the current process group (no-op without one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# -- local launcher ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _forwarding(children: list[subprocess.Popen]) -> Iterator[None]:
    """Pass SIGTERM/SIGUSR1/SIGINT/SIGUSR2 on to every rank while they run."""

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signals = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch_local(argv: Sequence[str], nproc: int, *, env: Mapping[str, str] | None = None) -> int:
    """Run ``python -m suite.cli <argv>`` as ``nproc`` ranks on this machine (gloo on CPU).

    Each child gets torchrun's variables. Signals are forwarded to all ranks (they agree on the
    step to stop at). When a rank fails the others are terminated. Returns the exit code of the
    first rank that failed (the cause, not the -SIGTERM of the ranks ended after it), else rank 0's,
    else the first non-zero code of another rank.
    """
    base = dict(os.environ if env is None else env)
    port = _free_port()
    children: list[subprocess.Popen] = []
    for rank in range(nproc):
        child_env = {
            **base,
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        }
        # A session of their own: a terminal's Ctrl-C reaches the launcher only, which forwards it once.
        children.append(
            subprocess.Popen([sys.executable, "-m", "suite.cli", *argv], env=child_env, start_new_session=True)
        )
    codes: dict[int, int] = {}
    failed_at: float | None = None
    first_failure: int | None = None  # the cause; ranks terminated after it report -SIGTERM
    with _forwarding(children):
        while len(codes) < nproc:
            for rank, child in enumerate(children):
                if rank in codes:
                    continue
                try:
                    code = child.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                codes[rank] = code
                if code not in (0, 75) and failed_at is None:  # the others would wait for it at a collective
                    failed_at, first_failure = time.monotonic(), code
                    for other in children:
                        if other.poll() is None:
                            other.terminate()
            if failed_at is not None and time.monotonic() - failed_at > 30:
                for other in children:
                    if other.poll() is None:
                        other.kill()
    if first_failure is not None:
        return first_failure
    if codes[0] != 0:
        return codes[0]
    return next((c for c in codes.values() if c != 0), 0)
