"""What is measured for one case: one module per metric group, and :func:`measure_case`, which runs
the groups asked for (bench.scenarios.measure says which groups yield which records)."""

from ..measure.inputs import example_inputs
from .base import METRIC_GROUPS, Settings, check_device, group_metric
from .measure import measure_case
from .speedup import reference_case

__all__ = [
    "METRIC_GROUPS", "Settings", "check_device", "example_inputs", "group_metric", "measure_case", "reference_case",
]
