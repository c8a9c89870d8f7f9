"""Running a matrix of cases: :mod:`.presets` (the named matrices and their effort), :mod:`.jobs`
(what is done for one case), :mod:`.executors` (inline, a fresh local process per case) and
:mod:`.slurm` (with :mod:`.slurm_queue`, what the scheduler says), the worker processes (:mod:`.worker`, :mod:`.task`), the run directory
(:mod:`.store`: one writer, nothing lost, nothing twice), :mod:`.runner` (cases in this process) and
:mod:`.merge` (shards into one run), :mod:`.archive` (``run --history``: an append-only copy of every
finished run).
"""
