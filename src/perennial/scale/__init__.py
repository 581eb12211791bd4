"""Scale-out that wraps, never forks (docs/scale-out.md).

- :mod:`perennial.scale.worker`: one run as a self-contained function (config in, result out,
  checkpoints in a directory every worker reaches, no store access), and the driver's half
  that writes its result into the store.
- :mod:`perennial.scale.ray_runs`: ``RayPool`` runs many such runs as Ray tasks
  (``perennial compare --workers N``, ``--sweep``, ``bench/reproduce.py --workers N``).
- :mod:`perennial.scale.tune`: ``perennial tune`` (Ray Tune) with a protocol that never tunes on
  the stream it reports.

Data-parallel training of one run (torchrun, DDP) lives in :mod:`perennial.train.distributed`.
"""
