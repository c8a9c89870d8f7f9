"""vptbench: the measurement harness (cases, counters, timers, results, reports, gate, CLI)."""

__version__ = "0.1.0"
