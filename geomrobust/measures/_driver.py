"""Settings shared by the measurement entry points."""

from __future__ import annotations

import numpy as np

__all__ = ["default_tol"]


def default_tol(dtype, tol: float | None) -> float:
    """Relative residual tolerance of the eigensolvers: 1e-3 in float32, 1e-6 in float64."""
    if tol is not None:
        return float(tol)
    return 1e-6 if np.dtype(dtype) == np.float64 else 1e-3
