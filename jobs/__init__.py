"""Running sweeps and studies through submitit on SLURM, locally or in-process.

- :mod:`jobs.launch` checks a sweep and submits what is not done; :mod:`jobs.session` is one
  launch as the backends see it (state file, report).
- :mod:`jobs.backends`: the backends behind one interface (``slurm``, ``local``, ``debug``);
  :mod:`jobs.local_controller`: the local runs' submitit controller.
- :mod:`jobs.worker`: the job callables (a run, a maps build step); :mod:`jobs.preemption`: the
  one preemption-safe training they and study trials use.
- :mod:`jobs.tune`: Optuna studies (dispatch, worker, status); :mod:`jobs.study_storage`: where a
  study lives.
- :mod:`jobs.stop`: how a launcher answers SIGINT/SIGTERM; :mod:`jobs.locks`: the one file lock.
- :mod:`jobs.arrays` splits job arrays under ``MaxArraySize``; :mod:`jobs.slurm` asks the cluster.
- :mod:`jobs.sweep_state` holds the run states and the state file, :mod:`jobs.status_report`
  reports, :mod:`jobs.cli` and :mod:`jobs.tune_cli` add the commands, :mod:`jobs.demo` is
  ``make demo``.
"""
