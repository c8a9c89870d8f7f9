"""Numbers for people: one way to write each quantity in the CLI, the tables and the plots.

- counts (params) are integers with thousands separators: ``33,783,811``;
- measured quantities get 3 significant digits, integers with separators from 100 up
  (``0.738``, ``9.57``, ``96.6``, ``114``, ``1,235``), so a column never mixes ``96.60`` and ``114.0``;
- units are scaled to the size of the number: GFLOPs below 1 become MFLOPs, ms from 1,000 on
  become s (:func:`scaled`); a table column picks one unit for all its rows (:func:`column_unit`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import TypeGuard

SIG_DIGITS = 3
# unit -> (smaller unit, factor to it) used when every value is below 1; (larger unit, divisor) from 1,000 on
_DOWN = {"GFLOPs": ("MFLOPs", 1e3), "MFLOPs": ("KFLOPs", 1e3), "s": ("ms", 1e3), "GFLOP/s": ("MFLOP/s", 1e3)}
_UP = {"ms": ("s", 1e3), "MFLOPs": ("GFLOPs", 1e3), "GFLOPs": ("TFLOPs", 1e3), "MiB": ("GiB", 1024.0)}


def finite(x: object) -> TypeGuard[float]:
    """A real, finite number (not None, NaN or a bool; numpy's scalars count)."""
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)


def count(x: float | int) -> str:
    """An integer with thousands separators: 33783811 -> '33,783,811'."""
    return f"{round(x):,}"


def sig(x: float, digits: int = SIG_DIGITS) -> str:
    """``digits`` significant digits; integers with separators once the integer part has that many."""
    if not finite(x):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (digits - 1):
        return f"{round(x):,}"
    decimals = digits - 1 - math.floor(math.log10(abs(x)))
    text = f"{x:.{max(decimals, 0)}f}"
    if abs(float(text)) >= 10 ** (digits - 1):  # 99.96 rounds to 100.0: drop the decimals
        return f"{round(x):,}"
    return text


def scaled(x: float, unit: str) -> tuple[float, str]:
    """``x`` in ``unit`` rescaled to a unit that suits its size: (0.00203, GFLOPs) -> (2.03, MFLOPs)."""
    if not finite(x):
        return x, unit
    while unit in _DOWN and 0 < abs(x) < 1:
        unit, factor = _DOWN[unit]
        x *= factor
    while unit in _UP and abs(x) >= 1000:
        unit, divisor = _UP[unit]
        x /= divisor
    return x, unit


def column_unit(values: Iterable[float], unit: str) -> tuple[str, float]:
    """One unit for a column of values in ``unit`` (the one that suits its largest value) and the factor to it."""
    xs = [abs(v) for v in values if finite(v) and v != 0]
    if not xs:
        return unit, 1.0
    big, new = scaled(max(xs), unit)
    return new, big / max(xs)


def quantity(value: float | int | None, unit: str) -> str:
    """A value with its unit, as the CLI prints it: '33,783,811', '2.03 MFLOPs', '1.24 s', '+12.5 %'."""
    if value is None or not finite(value):
        return "-"
    if unit == "count":
        return count(value)
    x, u = scaled(float(value), unit)
    return f"{sig(x)} {u}"


def one_sample(n: object) -> bool:
    """Whether a timing rests on a single sample (``n`` == 1): it has no interval, whatever its record says."""
    return finite(n) and round(n) == 1


def has_interval(low: object, high: object, n: object = None) -> bool:
    """Whether a record's ``ci_low``/``ci_high`` is an interval to show: both ends finite and more than one sample.

    A one-sample timing has none (``ci_low`` None since the Student-t change; older records wrote
    ``ci_low == ci_high == value`` with ``n`` 1, which must read the same way: no interval, no whisker).
    """
    return finite(low) and finite(high) and not one_sample(n)


def with_ci(value: float, low: float | None, high: float | None, digits: int = SIG_DIGITS, n: object = None) -> str:
    """``median [low, high]`` when the interval is known; ``value (1 sample)`` for one sample; else the median alone."""
    if one_sample(n):
        return f"{sig(value, digits)} (1 sample)"
    if finite(low) and finite(high):
        return f"{sig(value, digits)} [{sig(low, digits)}, {sig(high, digits)}]"
    return sig(value, digits)
