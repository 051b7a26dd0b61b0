"""Thick-restart Lanczos driven from the host: one jitted program per Arnoldi step of a chunk.

The device form of the solver (:func:`geomrobust.measures._eigsolve.thick_restart_lanczos`,
vmapped over a chunk of operators) runs every operator call inside a ``while_loop`` and a
``fori_loop``. On XLA's CPU backend a convolution inside a loop body is not rewritten into
its fast layout, so a Hessian-vector product of a convolutional network there costs many
times what it costs at the top level of a program (docs/performance.md, "Lanczos on the
CPU": 14x for a WideResNet-10-2). This module runs the same kernels of
:mod:`geomrobust.measures._eigsolve` as top-level programs:

* ``_residuals_program``: the chunk's operator linearized once (``jax.linearize`` of the
  gradient: the forward and backward passes), its residuals kept as arrays;
* ``_arnoldi_program``: ONE Arnoldi step ``j`` for every operator of the chunk (one batched
  operator call over the chunk from those residuals, the tangent passes only, then
  :func:`~._eigsolve._arnoldi_update` per operator: CGS2 and the update of ``V`` and
  ``T``); ``j`` is a traced argument, so it compiles once;
* ``_restart_program``: the thick restart opening a cycle (:func:`~._eigsolve.lanczos_restart`);
* ``_ritz_program``: the close of a cycle (:func:`~._eigsolve.lanczos_ritz`) and the rows
  still active; the host reads that mask (one synchronisation per cycle) and stops when no
  row is active.

A row is active in a cycle when it was not ``done`` and had restarts left at the start of
the cycle, the condition of the ``while_loop``; the programs keep an inactive row exactly
as it was, as ``while_loop`` under ``vmap`` keeps a finished example, so both forms run the
same per-row arithmetic and agree to the rounding of the operator (here one batched
linearization of the chunk, there one per point under ``vmap``; XLA compiles a loop body and
a top-level program differently).

A problem (:class:`LanczosProblem`) gives the batched operator and the per-row projector as
module-level functions (hashable: a static argument), the weights stay a pytree argument, so
the programs compile once per architecture, shapes and solver settings.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._eigsolve import LanczosState, _arnoldi_update, lanczos_restart, lanczos_ritz

__all__ = ["LanczosProblem", "host_lanczos"]


class LanczosProblem(NamedTuple):
    """The operators of a chunk, as module-level functions.

    linearize : ``(clf, data) -> lin``: the chunk's operator core linearized at its points
        (``jax.linearize``: a ``jax.tree_util.Partial`` whose leaves are the residuals),
        e.g. the Hessian of ``Σ_i f_i`` (block diagonal: the examples do not interact).
    apply : ``(data, lin, V) -> W``: ``W[i] = A_i V[i]`` for ``V`` ``(C, D)`` from ``lin``
        (projections and scalings around it); ``data`` the per-row arrays.
    project : ``(data_i, v) -> v`` the projector of row ``i`` applied to a fresh random
        direction (see :func:`~._eigsolve.thick_restart_lanczos`), or None.
    """

    linearize: Callable
    apply: Callable
    project: Callable | None


@partial(jax.jit, static_argnames="problem")
def _residuals_program(clf, data, *, problem: LanczosProblem):
    """The residuals of the chunk's linearization (once per chunk): the forward and backward
    passes the Arnoldi steps then skip."""
    return jax.tree.leaves(problem.linearize(clf, data))


def _relinearized(problem: LanczosProblem, clf, data, residuals):
    """The linearization with the residuals of :func:`_residuals_program`: it is traced
    again (the same function on the same shapes gives the same residuals in the same
    order, checked here), and the fresh residuals are left unused, so XLA removes the
    forward and backward passes that computed them: each step costs the tangent passes
    only."""
    lin = problem.linearize(clf, data)
    fresh, tree = jax.tree.flatten(lin)
    if len(fresh) != len(residuals) or any(
        (a.shape, a.dtype) != (b.shape, b.dtype) for a, b in zip(fresh, residuals, strict=True)
    ):
        raise RuntimeError(
            "the linearization of the Lanczos operator traced differently twice (its "
            "residuals changed); run with loop='device'"
        )
    return jax.tree.unflatten(tree, residuals)


def _freeze(active, new, old):
    def pick(a, b):
        return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def _row_project(problem: LanczosProblem, data_i):
    if problem.project is None:
        return lambda v: v
    return lambda v: problem.project(data_i, v)


@partial(jax.jit, static_argnames="problem")
def _arnoldi_program(clf, data, residuals, state: LanczosState, active, j, *,
                     problem: LanczosProblem):  # fmt: skip
    """Arnoldi step ``j`` of every active row (``j`` traced: one compilation for all ``j``):
    one batched operator call from the chunk's residuals, then CGS2 and the updates."""
    lin = _relinearized(problem, clf, data, residuals)
    w = problem.apply(data, lin, state.basis[:, j])
    new = jax.vmap(lambda d, s, wi: _arnoldi_update(_row_project(problem, d), s, wi, j))(
        data, state, w
    )
    return _freeze(active, new, state)


@partial(jax.jit, static_argnames=("keep", "which"))
def _restart_program(state: LanczosState, active, *, keep: int, which: str):
    new = jax.vmap(lambda s: lanczos_restart(s, keep=keep, which=which))(state)
    return _freeze(active, new, state)


@partial(jax.jit, static_argnames=("num", "which", "tol", "restarts"))
def _ritz_program(state: LanczosState, active, *, num: int, which: str, tol: float,
                  restarts: int):  # fmt: skip
    """The close of the cycle for the active rows, and the rows active in the next one."""
    new = jax.vmap(lambda s: lanczos_ritz(s, num=num, which=which, tol=tol)[0])(state)
    new = _freeze(active, new, state)
    return new, _active(new, restarts)


def _active(state: LanczosState, restarts: int):
    return ~state.done & (state.restarts < restarts)


@partial(jax.jit, static_argnames="restarts")
def _active_program(state: LanczosState, *, restarts: int):
    return _active(state, restarts)


def host_lanczos(
    problem: LanczosProblem,
    clf: Any,
    data: Any,
    state: LanczosState,
    *,
    num: int,
    keep: int,
    which: str,
    tol: float,
    restarts: int,
) -> LanczosState:
    """Run the batched ``state`` (``C`` rows, from :func:`~._eigsolve.lanczos_init`) to the
    end, as ``lax.while_loop`` of :func:`~._eigsolve.lanczos_step` under ``vmap`` would:
    cycles of (restart,) Arnoldi steps and Ritz values while any row is active. ``num``,
    ``keep``, ``which``, ``tol``, ``restarts``: as in
    :func:`~._eigsolve.thick_restart_lanczos` (``num`` counting the guard pairs)."""
    m = state.projected.shape[-1]
    residuals = _residuals_program(clf, data, problem=problem)
    active = _active_program(state, restarts=int(restarts))
    first = True
    while bool(np.any(jax.device_get(active))):
        if not first:
            state = _restart_program(state, active, keep=keep, which=which)
        for j in range(0 if first else keep, m):
            state = _arnoldi_program(clf, data, residuals, state, active, np.int32(j),
                                     problem=problem)  # fmt: skip
        state, active = _ritz_program(state, active, num=num, which=which, tol=tol,
                                      restarts=int(restarts))  # fmt: skip
        first = False
    return state
