"""Optimal-transport alignment between two token sets, via ott-jax 0.6.0 (Cuturi et al. 2022, "Optimal Transport
Tools (OTT): A JAX Toolbox for all things Wasserstein").

`sinkhorn_align`: entropic OT (Cuturi 2013, "Sinkhorn Distances") between x [..., T1, D] and y [..., T2, D]:
  P = argmin_{P 1 = a, P^T 1 = b} <P, C> - epsilon H(P),
solved by ott's log-domain Sinkhorn on an `ott.geometry.pointcloud.PointCloud` (`ott.solvers.linear.sinkhorn`).
Returns the coupling P [..., T1, T2] (rows sum to a, columns to b), the transport cost <P, C> and ott's
regularised cost. Masks [..., T] give padded tokens zero mass (a = mask / sum(mask)); their rows/columns of P are 0.

`gromov_wasserstein_align`: entropic Gromov-Wasserstein (Peyre, Cuturi & Solomon 2016) via
`ott.solvers.quadratic.gromov_wasserstein`: aligns x [..., T1, D1] and y [..., T2, D2] living in different spaces
by matching their intra-set distance matrices (invariant to rotations/translations of either set).

Both are jittable and vmappable (leading axes are mapped with `jax.vmap`) and differentiable through ott
(implicit differentiation for Sinkhorn). Everything here is ott's; this module only chooses the costs, turns masks
into marginals, maps batch axes and returns plain arrays.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from ott.geometry import costs, pointcloud
from ott.problems.linear import linear_problem
from ott.problems.quadratic import quadratic_problem
from ott.solvers.linear import sinkhorn
from ott.solvers.quadratic import gromov_wasserstein

from mmjax.errors import MmjaxError

COSTS = {"sqeuclidean": costs.SqEuclidean, "euclidean": costs.Euclidean, "cosine": costs.Cosine}


class OTResult(NamedTuple):
  """coupling [..., T1, T2]; cost [...] = <P, C>; reg_cost [...] (ott's regularised objective); converged [...]."""
  coupling: jax.Array
  cost: jax.Array
  reg_cost: jax.Array
  converged: jax.Array


def _cost_fn(name: str) -> costs.CostFn:
  if name not in COSTS:
    raise MmjaxError(f"unknown OT cost {name!r}; valid: {', '.join(COSTS)}")
  return COSTS[name]()


def _marginal(mask, t: int, batch: tuple, dtype) -> jax.Array:
  """Uniform weights [..., T] over the unmasked tokens."""
  if mask is None:
    return jnp.full(batch + (t,), 1.0 / t, dtype)
  mask = jnp.broadcast_to(jnp.asarray(mask, dtype), batch + (t,))
  return mask / jnp.sum(mask, axis=-1, keepdims=True)


def _check(x, y, same_dim: bool = True):
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.ndim < 2 or y.ndim < 2 or (same_dim and x.shape[-1] != y.shape[-1]):
    need = "the same D" if same_dim else "D1, D2"
    raise MmjaxError(f"OT alignment expects x [..., T1, D] and y [..., T2, D] ({need}), got x {tuple(x.shape)} "
                     f"and y {tuple(y.shape)}")
  if x.shape[:-2] != y.shape[:-2]:
    raise MmjaxError(f"x and y have different batch axes {x.shape[:-2]} and {y.shape[:-2]}")
  dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
  return x.astype(dtype), y.astype(dtype)


def _map_pairs(one, x, y, a, b):
  """one(x [T1, D], y [T2, D], a [T1], b [T2]) over the leading axes of x, y [..., T, D] and a, b [..., T]."""
  batch = x.shape[:-2]
  if not batch:
    return one(x, y, a, b)
  flat = lambda v, core: v.reshape((-1,) + v.shape[v.ndim - core:])
  out = jax.vmap(one)(flat(x, 2), flat(y, 2), flat(a, 1), flat(b, 1))
  return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), out)


@functools.partial(jax.jit, static_argnames=("cost", "relative_epsilon", "threshold", "max_iterations", "tau_a",
                                             "tau_b"))
def sinkhorn_align(x: jax.Array, y: jax.Array, *, epsilon: float = 0.05, cost: str = "sqeuclidean",
                   relative_epsilon: str | None = None, x_mask=None, y_mask=None, threshold: float = 1e-6,
                   max_iterations: int = 5000, tau_a: float = 1.0, tau_b: float = 1.0) -> OTResult:
  """Entropic OT coupling between token sets x [..., T1, D] and y [..., T2, D].

  epsilon: entropic regularisation, in cost units (or a multiple of the mean/std cost with relative_epsilon);
  smaller is sharper (closer to an assignment) and slower. cost: "sqeuclidean", "euclidean" or "cosine"
  (1 - cos). threshold: ott's stopping criterion on the L1 marginal error. tau_a, tau_b < 1 relax the row /
  column marginal (unbalanced OT, ott's KL penalty with weight epsilon tau / (1 - tau)); 1 = balanced.
  """
  x, y = _check(x, y)
  batch = x.shape[:-2]
  a = _marginal(x_mask, x.shape[-2], batch, x.dtype)
  b = _marginal(y_mask, y.shape[-2], batch, x.dtype)
  solver = sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations)
  cost_fn = _cost_fn(cost)

  def one(xi, yi, ai, bi):
    geom = pointcloud.PointCloud(xi, yi, cost_fn=cost_fn, epsilon=epsilon, relative_epsilon=relative_epsilon)
    out = solver(linear_problem.LinearProblem(geom, ai, bi, tau_a=tau_a, tau_b=tau_b))
    p = out.matrix
    return OTResult(p, jnp.sum(p * geom.cost_matrix), out.reg_ot_cost, out.converged)

  return _map_pairs(one, x, y, a, b)


@functools.partial(jax.jit, static_argnames=("cost", "relative_epsilon", "threshold", "max_iterations"))
def gromov_wasserstein_align(x: jax.Array, y: jax.Array, *, epsilon: float = 0.01, cost: str = "sqeuclidean",
                             relative_epsilon: str | None = None, x_mask=None, y_mask=None,
                             threshold: float = 1e-5, max_iterations: int = 50) -> OTResult:
  """Entropic Gromov-Wasserstein coupling between x [..., T1, D1] and y [..., T2, D2] (D1 may differ from D2).

  The intra-set costs C_x [T1, T1], C_y [T2, T2] use `cost`; the result's `cost` is the GW objective
  sum_{ijkl} (C_x[i, k] - C_y[j, l])^2 P[i, j] P[k, l] and `reg_cost` ott's regularised GW cost.
  """
  x, y = _check(x, y, same_dim=False)
  batch = x.shape[:-2]
  a = _marginal(x_mask, x.shape[-2], batch, x.dtype)
  b = _marginal(y_mask, y.shape[-2], batch, x.dtype)
  cost_fn = _cost_fn(cost)
  solver = gromov_wasserstein.GromovWasserstein(
      sinkhorn.Sinkhorn(threshold=threshold * 0.1, max_iterations=2000), epsilon=epsilon,
      relative_epsilon=relative_epsilon, threshold=threshold, max_iterations=max_iterations)

  def one(xi, yi, ai, bi):
    gx = pointcloud.PointCloud(xi, xi, cost_fn=cost_fn)
    gy = pointcloud.PointCloud(yi, yi, cost_fn=cost_fn)
    out = solver(quadratic_problem.QuadraticProblem(gx, gy, a=ai, b=bi))
    p = out.matrix
    cx, cy = gx.cost_matrix, gy.cost_matrix
    # sum_{ijkl} (cx_ik - cy_jl)^2 p_ij p_kl = a^T cx^2 a + b^T cy^2 b - 2 <cx p cy, p>
    gw = ai @ (cx ** 2) @ ai + bi @ (cy ** 2) @ bi - 2.0 * jnp.sum((cx @ p @ cy.T) * p)
    return OTResult(p, gw, out.reg_gw_cost, out.converged)

  return _map_pairs(one, x, y, a, b)
