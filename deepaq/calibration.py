"""Monotonic cubic mapping from a metric's raw value to a MOS-like scale.

Why a *constrained* cubic: ITU-T P.1401 maps objective scores to MOS with a third-order polynomial
that must be monotone, otherwise the mapping would reorder items and change the metric's ranking.
Used by training (distance -> ViSQOL calibration saved with checkpoints), by scoring (calibrated
MOS) and by evaluation (cross-validated mapping before PCC/RMSE).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_GRID = 64  # points in the data range where the derivative is constrained


class MonotonicCubic:
    """``y = c0 + c1 t + c2 t^2 + c3 t^3`` with ``t`` = x scaled to [0, 1] over the fitted range.

    The derivative is constrained to one sign on a grid spanning the data range; the direction
    (increasing or decreasing) is whichever fits better. Inputs outside the fitted range are clamped
    to it, so the map stays monotone everywhere (a free cubic could turn back outside the data).
    """

    def __init__(self, coef: list[float] | None = None, x_min: float = 0.0, x_max: float = 1.0,
                 increasing: bool = True, clip: tuple[float, float] | None = None):
        self.coef = np.asarray(coef if coef is not None else [0.0, 1.0, 0.0, 0.0], dtype=np.float64)
        self.x_min, self.x_max = float(x_min), float(x_max)
        self.increasing = bool(increasing)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray) -> MonotonicCubic:
        """Least squares under the monotonicity constraint; NaN pairs are ignored."""
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        if x.size < 2:
            raise ValueError(f"need at least 2 finite (x, y) pairs to fit, got {x.size}")
        self.x_min, self.x_max = float(x.min()), float(x.max())
        if self.x_max == self.x_min:  # constant input: the best map is the mean
            self.coef = np.array([y.mean(), 0.0, 0.0, 0.0])
            return self
        t = self._scale(x)
        best = None
        for increasing in (True, False):
            coef = _fit_constrained(t, y, increasing)
            sse = float(np.sum((_poly(coef, t) - y) ** 2))
            if best is None or sse < best[0] - 1e-12:
                best = (sse, coef, increasing)
        _, self.coef, self.increasing = best
        return self

    # -- use -------------------------------------------------------------------------------------
    def _scale(self, x: np.ndarray) -> np.ndarray:
        span = self.x_max - self.x_min
        if span <= 0:
            return np.zeros_like(x)
        return (np.clip(x, self.x_min, self.x_max) - self.x_min) / span

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        y = _poly(self.coef, self._scale(x))
        if self.clip is not None:
            y = np.clip(y, *self.clip)
        return np.where(np.isfinite(x), y, np.nan)

    def to_dict(self) -> dict:
        return {"kind": "monotonic_cubic", "coef": [float(c) for c in self.coef],
                "x_min": self.x_min, "x_max": self.x_max, "increasing": self.increasing,
                "clip": None if self.clip is None else list(self.clip)}

    @classmethod
    def from_dict(cls, d: dict) -> MonotonicCubic:
        kind = d.get("kind", "monotonic_cubic")
        if kind != "monotonic_cubic":
            raise ValueError(f"not a monotonic cubic calibration (kind={kind!r})")
        clip = d.get("clip")
        return cls(coef=d["coef"], x_min=d["x_min"], x_max=d["x_max"],
                   increasing=d.get("increasing", True), clip=None if clip is None else tuple(clip))

    def __repr__(self) -> str:
        c = ", ".join(f"{v:.4g}" for v in self.coef)
        return (f"MonotonicCubic(coef=[{c}], range=[{self.x_min:.4g}, {self.x_max:.4g}], "
                f"{'increasing' if self.increasing else 'decreasing'})")


def _poly(coef: np.ndarray, t: np.ndarray) -> np.ndarray:
    return coef[0] + t * (coef[1] + t * (coef[2] + t * coef[3]))


def _fit_constrained(t: np.ndarray, y: np.ndarray, increasing: bool) -> np.ndarray:
    """SLSQP on the 4 coefficients with ``sign * p'(t_k) >= 0`` on a grid of [0, 1]."""
    from scipy.optimize import minimize

    design = np.stack([np.ones_like(t), t, t**2, t**3], axis=1)
    grid = np.linspace(0.0, 1.0, _GRID)
    deriv = np.stack([np.zeros_like(grid), np.ones_like(grid), 2 * grid, 3 * grid**2], axis=1)
    sign = 1.0 if increasing else -1.0
    a = sign * deriv

    # Start from the best feasible straight line (slope clipped to the allowed sign).
    slope, intercept = np.polyfit(t, y, 1) if np.ptp(t) > 0 else (0.0, y.mean())
    slope = max(sign * slope, 0.0) * sign
    intercept = float(np.mean(y - slope * t))
    x0 = np.array([intercept, slope, 0.0, 0.0])
    scale = max(float(np.std(y)), 1e-12)

    def loss(c: np.ndarray) -> float:
        r = (design @ c - y) / scale
        return float(r @ r)

    def grad(c: np.ndarray) -> np.ndarray:
        return 2.0 * design.T @ ((design @ c - y) / scale) / scale

    res = minimize(loss, x0, jac=grad, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda c: a @ c, "jac": lambda c: a}],
                   options={"maxiter": 500, "ftol": 1e-12})
    coef = res.x if np.all(a @ res.x >= -1e-9) else x0
    # Unconstrained least squares wins when it is already monotone (SLSQP can stop early).
    free, *_ = np.linalg.lstsq(design, y, rcond=None)
    if np.all(a @ free >= 0) and loss(free) <= loss(coef):
        coef = free
    return np.asarray(coef, dtype=np.float64)
