"""A run's life on disk: its records and their names, the writer, W&B tracking, stop signals, seeds.

- ``records``: the run directory (``RunPaths``), ``RunState`` worked out from the files, atomic
  writes, the run lock.
- ``writer``: ``RunWriter``, the one seam through which a training writes files and W&B.
- ``tracking``: the W&B sink (the run directory stays the source of truth).
- ``signals``: ``GracefulStop``, how every long-running command stops at a boundary.
- ``seeds``: ``derive_seed``/``seed_everything``, seeds named by what they seed.
- ``migrate``: renaming run folders of earlier suite versions.

Imports: ``suite.config`` only (below it), never the packages above.
"""
