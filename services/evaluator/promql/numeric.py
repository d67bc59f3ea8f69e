"""Numeric building blocks shared by functions and aggregations, matching Prometheus' float behaviour:
Kahan-Neumaier summation, the quantile interpolation, linear regression."""

from __future__ import annotations

import math


def kahan_add(inc: float, total: float, c: float) -> tuple[float, float]:
    """One step of Kahan-Neumaier summation (Prometheus' kahanSumInc): returns (new sum, new compensation)."""
    t = total + inc
    if math.isinf(t):
        c = 0.0
    elif abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def quantile(q: float, values: list[float]) -> float:
    """The q-quantile of `values` with linear interpolation between ranks (NaN sorts first, as in Go)."""
    if not values or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=lambda v: (0, 0.0) if math.isnan(v) else (1, v))
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def linear_regression(times_ms: list[int], values: list[float], intercept_ms: int) -> tuple[float, float]:
    """Least-squares (slope per second, intercept at `intercept_ms`), as Prometheus' linearRegression."""
    n = 0.0
    sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = values[0]
    const_y = True
    for i, (t, y) in enumerate(zip(times_ms, values, strict=True)):
        if const_y and i > 0 and y != init_y:
            const_y = False
        n += 1.0
        x = (t - intercept_ms) / 1e3
        sum_x, c_x = kahan_add(x, sum_x, c_x)
        sum_y, c_y = kahan_add(y, sum_y, c_y)
        sum_xy, c_xy = kahan_add(x * y, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_add(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return math.nan, math.nan
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = cov_xy / var_x if var_x != 0 else (math.nan if cov_xy == 0 else math.copysign(math.inf, cov_xy))
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def go_div(a: float, b: float) -> float:
    """Go's float division: x/0 is ±Inf (NaN for 0/0 or NaN/0) instead of ZeroDivisionError."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b
