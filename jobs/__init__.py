"""Running sweeps through submitit on SLURM, locally or in-process.

:mod:`jobs.launch` checks and submits, :mod:`jobs.worker` is the resumable job callable,
:mod:`jobs.arrays` splits job arrays under ``MaxArraySize``, :mod:`jobs.slurm` asks the cluster,
:mod:`jobs.state` holds the run states and the state file, :mod:`jobs.status` reports, and
:mod:`jobs.cli` adds ``suite sweep plan|launch|status``.
"""
