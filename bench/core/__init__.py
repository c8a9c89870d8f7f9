"""What every layer of the harness shares: the case (:mod:`.case`), records and ``meta.json``
(:mod:`.results`), the one user-error type (:mod:`.errors`), numbers for people (:mod:`.numbers`),
progress reporting (:mod:`.progress`) and plugins (:mod:`.plugins`). It imports nothing of ``bench``
above it."""

__version__ = "0.1.0"  # the package's version (bench.__version__), recorded in every meta.json
