"""What the client asks SLURM: limits, partitions, dry-run submissions and job states.

Every function here runs one SLURM client command (``scontrol``, ``sinfo``, ``sbatch
--test-only``, ``sacct``) and parses its output; nothing submits a job. :func:`sacct` takes all
job ids of a sweep at once, so ``status`` costs one accounting query however large the sweep is
(submitit's ``SlurmInfoWatcher`` does the same with one ``-j`` per id).
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_MAX_ARRAY_SIZE",
    "Node",
    "Partition",
    "SacctRecord",
    "available",
    "check_resources",
    "max_array_size",
    "partitions",
    "sacct",
    "test_only",
]

DEFAULT_MAX_ARRAY_SIZE = 1001
TIMEOUT_S = 60


def _run(args: list[str], *, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def available() -> bool:
    """SLURM's client commands are here and the controller answers."""
    if not all(shutil.which(cmd) for cmd in ("sbatch", "srun", "sinfo")):
        return False
    try:
        return _run(["sinfo", "-h", "-o", "%P"], timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def max_array_size() -> int:
    """``MaxArraySize`` from ``scontrol show config`` (array task indexes stay below it)."""
    try:
        out = _run(["scontrol", "show", "config"]).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


@dataclass(frozen=True)
class Node:
    """One node of a partition as ``sinfo`` reports it."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int
    gres: str


@dataclass
class Partition:
    """A partition: its nodes and time limit (None: unlimited)."""

    name: str
    default: bool
    max_time_min: int | None
    nodes: list[Node] = field(default_factory=list)


def _minutes(text: str) -> int | None:
    """SLURM time (``infinite``, ``30:00``, ``2:00:00``, ``1-12:00:00``) in minutes."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)  # mm:ss -> 0:mm:ss
    hours, minutes, seconds = parts[-3:]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def gpu_count(gres: str) -> int:
    """GPUs in a GRES string such as ``gpu:2``, ``gpu:a100:8(S:0-1)`` or ``(null)``."""
    return sum(int(n) for n in re.findall(r"\bgpu(?::[A-Za-z0-9_.-]+)?:(\d+)", gres))


def partitions() -> dict[str, Partition]:
    """Partitions and their nodes, from one ``sinfo -N`` call."""
    out = _run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G|%l"])
    if out.returncode != 0:
        raise RuntimeError(f"sinfo failed: {out.stderr.strip() or out.stdout.strip()}")
    found: dict[str, Partition] = {}
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        name, node, cpus, mem, gres, limit = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        part = found.setdefault(name, Partition(name, default, _minutes(limit)))
        part.nodes.append(Node(node, int(cpus.rstrip("+")), int(mem.rstrip("+")), gpu_count(gres), gres))
    return found


def check_resources(
    *,
    partition: str | None,
    gpus_per_node: int,
    cpus_per_task: int,
    mem_gb: float,
    timeout_min: int,
) -> list[str]:
    """What the partition cannot give a run; empty when every request fits one of its nodes.

    The messages name the ``resources.*`` field, the request and what the partition has.
    """
    parts = partitions()
    if not parts:
        return ["resources.partition: sinfo lists no partition; is the cluster up (sinfo)?"]
    if partition is None:
        chosen = next((p for p in parts.values() if p.default), None)
        if chosen is None:
            return [
                f"resources.partition: the cluster has no default partition; set one of {', '.join(parts)}"
            ]
    elif partition not in parts:
        return [
            f"resources.partition: no partition {partition!r} on this cluster; available: {', '.join(parts)}"
        ]
    else:
        chosen = parts[partition]
    nodes = chosen.nodes
    where = f"partition {chosen.name}"
    errors = []
    most_gpus = max(n.gpus for n in nodes)
    if gpus_per_node > most_gpus:
        gres = ", ".join(sorted({n.gres for n in nodes}))
        errors.append(
            f"resources.gpus_per_node: {gpus_per_node} requested, but the nodes of {where} have at most "
            f"{most_gpus} (GRES {gres}); lower resources.gpus_per_node or choose another resources.partition"
        )
    most_cpus = max(n.cpus for n in nodes)
    if cpus_per_task > most_cpus:
        errors.append(
            f"resources.cpus_per_task: {cpus_per_task} requested, but the nodes of {where} have at most {most_cpus} CPUs"
        )
    most_mem = max(n.mem_mb for n in nodes)
    if mem_gb * 1024 > most_mem:
        errors.append(
            f"resources.mem_gb: {mem_gb:g} GB requested, but the nodes of {where} have at most {most_mem / 1024:.1f} GB"
        )
    if chosen.max_time_min is not None and timeout_min > chosen.max_time_min:
        errors.append(
            f"resources.timeout_min: {timeout_min} requested, but {where} allows at most {chosen.max_time_min} minutes; "
            "runs longer than that requeue themselves, so a shorter timeout is fine"
        )
    return errors


# Answers of `sbatch --test-only` that mean "valid, but not startable right now" (a busy node
# answers EAGAIN in SLURM 22.05): the job would be accepted and queued.
BUSY_ANSWERS = ("Resource temporarily unavailable", "Requested nodes are busy", "Socket timed out")


def test_only(script: str) -> str | None:
    """``sbatch --test-only`` on a rendered sbatch script: None if SLURM would accept it, else its error.

    A busy cluster is not a rejection: :data:`BUSY_ANSWERS` count as accepted.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="sweep-test-") as handle:
        handle.write(script)
        handle.flush()
        out = _run(["sbatch", "--test-only", str(Path(handle.name))])
    if out.returncode == 0:
        return None
    answer = out.stderr.strip() or out.stdout.strip() or f"sbatch --test-only exited {out.returncode}"
    if any(busy in answer for busy in BUSY_ANSWERS):
        return None
    return answer.replace("sbatch: error: ", "")


@dataclass
class SacctRecord:
    """The accounting view of one job (or one array task), all its attempts together."""

    job_id: str
    state: str
    exit_code: str
    elapsed_s: int
    gpus: int
    reason: str
    gpu_seconds: float = 0.0  # gpus x elapsed, summed over every attempt
    requeued_before: bool = False  # an earlier attempt was requeued or preempted


_FORMAT = "JobID,State,ExitCode,ElapsedRaw,AllocTRES,Reason,Submit"

SUBMIT_SKEW_S = 60.0
"""How much earlier than the launcher's own clock a job's accounting ``Submit`` may read and still
be that job (sbatch's round trip plus clock skew between the login node and the controller)."""


def _expand_ids(job_id: str) -> list[str]:
    """``12_[3-5,9%2]`` -> 12_3, 12_4, 12_5, 12_9; plain ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if match is None:
        return [job_id]
    base, ranges = match.group(1), match.group(2).split("%")[0]
    ids = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        ids.extend(f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return ids


def _submit_time(text: str) -> float | None:
    """sacct's ``Submit`` (local time of the process that ran sacct) as a POSIX time."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def parse_sacct(text: str, not_before: Mapping[str, float] | None = None) -> dict[str, SacctRecord]:
    """Parse ``sacct --parsable2 --noheader -D -X --format=JobID,State,ExitCode,ElapsedRaw,AllocTRES,Reason,Submit``.

    With ``-D`` a requeued job has one line per attempt, oldest first; the last line is the
    current state, and earlier ``REQUEUED``/``PREEMPTED`` lines mark a requeue.

    Args:
        not_before: POSIX time each job (by base id, ``123`` for ``123_4``) was submitted, as the
            launcher recorded it. Accounting outlives a controller's job counter (a controller that
            lost its state, or ids wrapping at ``MaxJobId``), so ``sacct -j 123`` can also answer
            with an older job 123; lines submitted more than :data:`SUBMIT_SKEW_S` before the
            recorded time are such jobs and are skipped.
    """
    records: dict[str, SacctRecord] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6 or not fields[0] or "." in fields[0]:
            continue
        raw_id, state, exit_code, elapsed, tres, reason = fields[:6]
        since = (not_before or {}).get(raw_id.split("_")[0])
        submitted = _submit_time(fields[6]) if len(fields) > 6 else None
        if since is not None and submitted is not None and submitted < since - SUBMIT_SKEW_S:
            continue  # an older job that had the same id
        gpus = int(m.group(1)) if (m := re.search(r"gres/gpu=(\d+)", tres)) else 0
        seconds = int(elapsed) if elapsed.isdigit() else 0
        for job_id in _expand_ids(raw_id):
            old = records.get(job_id)
            record = SacctRecord(job_id, state, exit_code, seconds, gpus, reason, gpus * seconds)
            if old is not None:
                record.gpu_seconds += old.gpu_seconds
                record.requeued_before = old.requeued_before or old.state.split(" ")[0] in (
                    "REQUEUED",
                    "PREEMPTED",
                )
            records[job_id] = record
    return records


def sacct(job_ids: list[str], submitted: Mapping[str, float] | None = None) -> dict[str, SacctRecord] | None:
    """States of many jobs from ONE ``sacct`` call; None when accounting does not answer.

    Args:
        job_ids: job ids as submitit reports them (``123`` or array tasks ``123_4``); arrays
            are queried once by their array id.
        submitted: when each job id was submitted (POSIX time); accounting lines of older jobs
            with the same id are ignored (see :func:`parse_sacct`).
    """
    bases = sorted({jid.split("_")[0] for jid in job_ids if jid}, key=lambda s: (len(s), s))
    if not bases:
        return {}
    args = ["sacct", "-X", "-D", "--parsable2", "--noheader", f"--format={_FORMAT}", "-j", ",".join(bases)]
    try:
        out = _run(args)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    not_before: dict[str, float] = {}
    for jid, when in (submitted or {}).items():
        base = jid.split("_")[0]
        not_before[base] = min(when, not_before.get(base, when))
    return parse_sacct(out.stdout, not_before)
