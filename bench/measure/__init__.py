"""The trackers: pure functions that measure a model or a callable and return numbers, never records.

:mod:`.timing` (timers, the statistics of every timed figure), :mod:`.load` (what else used the CPU),
:mod:`.flops` with one module per counter (:mod:`.flops_fvcore`, :mod:`.flops_torch`, :mod:`.flops_paper`),
:mod:`.memory` (CUDA peaks) and :mod:`.rss` (a fresh process's peak resident set), :mod:`.runtimes`
(eager, torch.compile, ONNX Runtime), :mod:`.profiler` and :mod:`.gemm` (time by part, the machine's
matmul peak), :mod:`.inputs` (the example input of a case). Models are never changed by a tracker.
"""
