"""Per-example status codes of every search, solver and attack (docs/api.md, section 2).

In the spirit of Optimistix's ``RESULTS``: a result says, per example, how its search ended,
as an ``int8`` array of these codes, never by an exception under ``jit`` and never by a
silent number. The success field of a result (``converged`` or ``success``) is
``status == Status.SUCCESS``.
"""

from __future__ import annotations

import enum

import jax.numpy as jnp
import numpy as np

__all__ = ["STATUS_DTYPE", "Status"]

STATUS_DTYPE = np.int8


class Status(enum.IntEnum):
    """How a search ended for one example (``int8`` codes, stable across releases)."""

    SUCCESS = 0
    """Converged, or an adversarial point was found."""
    MAX_STEPS = 1
    """The step budget ran out before the stopping criterion was met."""
    NONFINITE = 2
    """A non-finite logit or gradient row: never a success, never correct."""
    NOT_FOUND = 3
    """The search ended without a label change (beyond its distance, box or radius)."""
    OFF_BOUNDARY = 4
    """Curvature was asked at a point that is not on the decision boundary."""
    PIECEWISE_LINEAR = 5
    """The exact Hessian is zero there (a piecewise-linear network): use a scale ``σ``."""
    MISCLASSIFIED = 6
    """The example is already misclassified, or tied, at ``x`` (margin 0): it has no
    boundary point of its own class to measure (boundary sets)."""
    UNKNOWN = 7
    """Not a success, and how the search ended was not recorded: a result saved before
    status codes existed (a resumed chunk store of an earlier release)."""

    @classmethod
    def describe(cls, codes) -> dict[str, int]:
        """Counts of each code in ``codes`` by name (codes that occur only)."""
        codes = np.asarray(codes).ravel()
        return {c.name: int(np.sum(codes == c)) for c in cls if np.any(codes == c)}


def status_from_success(success) -> np.ndarray:
    """The ``int8`` status of a saved result that has only its success field (a chunk of an
    earlier release): ``SUCCESS`` where ``success``, else ``UNKNOWN`` (why it failed was
    not recorded). NumPy in, NumPy out."""
    ok = np.asarray(success, bool)
    return np.where(ok, Status.SUCCESS, Status.UNKNOWN).astype(STATUS_DTYPE)


def status_codes(success, nonfinite, out_of_budget=False):
    """The ``int8`` status of a search from what it knows when it ends, per example:
    ``SUCCESS`` where ``success``, else ``NONFINITE`` where ``nonfinite`` (a non-finite
    logit or gradient row), else ``MAX_STEPS`` where ``out_of_budget``, else ``NOT_FOUND``.

    A success is decided by the search from finite values only, so it never meets a
    non-finite row; the success field of the result is then ``status == SUCCESS``."""
    return jnp.where(
        success,
        jnp.int8(Status.SUCCESS),
        jnp.where(
            nonfinite,
            jnp.int8(Status.NONFINITE),
            jnp.where(out_of_budget, jnp.int8(Status.MAX_STEPS), jnp.int8(Status.NOT_FOUND)),
        ),
    ).astype(STATUS_DTYPE)
