"""The objective interface (`Objective`) and its lookup by name: the base every objective module imports, apart
from the package's __init__ (which imports the objective modules to register them)."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import jax
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.mesh import AXES, make_mesh
from mmjax.registry import OBJECTIVES


@dataclasses.dataclass(frozen=True)
class ObjectiveContext:
  """What a batch-coupled loss may need beyond its features: the device `mesh` the batch is sharded over (None:
  the mesh of the surrounding `jax.set_mesh` context, else all devices) and the batch's mesh `axes`. The train
  step builds it from the loop's mesh; a loss never reads the mesh from anywhere else. The objective's settings
  (config.objective_kwargs) are not here: they are bound when the objective is built (`configurable`,
  `Objective.with_options`), so a loss reads them as its factory's arguments."""
  mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None
  axes: tuple[str, ...] = tuple(AXES)

  def batch_mesh(self):
    """The mesh to shard a loss over: `mesh` if it has `axes`, else the `jax.set_mesh` context's if it has
    them, else all devices as {"data": -1, "fsdp": 1} (another layout of the same devices gives the same loss)."""
    for mesh in (self.mesh, jax.sharding.get_abstract_mesh()):
      if mesh is not None and not mesh.empty and all(a in mesh.shape for a in self.axes):
        return mesh
    return make_mesh({"data": -1, "fsdp": 1})


@dataclasses.dataclass(frozen=True)
class Objective:
  """A training objective, in one of two forms.

  Batch-coupled (contrastive):
    features_fn(params, batch, rng, *, model, train) -> pytree of [B, ...] arrays (deterministic given rng);
    loss_from_features(features, *, ctx: ObjectiveContext) -> (loss scalar, metrics dict of scalars): a pure
      function of the features (what the loss needs from the parameters, such as CLIP's logit scale, is among
      them: the model returns it), so the step can differentiate it w.r.t. the features alone.
  Per-example (the loss is a mean over examples: MAE, MLM, classification):
    loss(params, batch, rng, *, model, train) -> (loss scalar, metrics dict of scalars).
  batch_keys: the batch entries the model reads, in the order of its positional arguments (used for `init`).
  `params` is the model's param tree (variables["params"]).
  options: the objective's settings and their defaults (config.objective_kwargs sets them: `with_options`);
  build(**options) -> the Objective with those settings (see `configurable`).
  """
  features_fn: Callable[..., Any] | None = None
  loss_from_features: Callable[..., Any] | None = None
  batch_keys: tuple[str, ...] = ()
  loss: Callable[..., Any] | None = None
  options: Mapping[str, Any] = FrozenDict()
  build: Callable[..., "Objective"] | None = dataclasses.field(default=None, compare=False)

  def __post_init__(self):
    coupled = self.features_fn is not None and self.loss_from_features is not None
    if coupled == (self.loss is not None):
      raise ValueError("an Objective has either features_fn + loss_from_features, or loss")

  def context(self, mesh=None) -> ObjectiveContext:
    """The ObjectiveContext of a batch on `mesh` (None: see ObjectiveContext.batch_mesh)."""
    return ObjectiveContext(mesh=mesh)

  def loss_fn(self, params, batch, rng, *, model, train: bool = True, ctx: ObjectiveContext | None = None):
    """(loss, metrics) for one batch; `ctx` (default: `self.context()`) reaches a batch-coupled loss."""
    if self.loss is not None:
      return self.loss(params, batch, rng, model=model, train=train)
    features = self.features_fn(params, batch, rng, model=model, train=train)
    return self.loss_from_features(features, ctx=self.context() if ctx is None else ctx)

  def with_options(self, settings: Mapping[str, Any] | None, *, name: str = "",
                   where: str = "objective_kwargs") -> "Objective":
    """This objective with `settings` (a subset of `options`) replacing their defaults; an unknown setting is
    an error naming the config key (`where`.<setting>) and the objective's settings."""
    settings = dict(settings or {})
    if not settings:
      return self
    unknown = [k for k in settings if k not in self.options]
    if unknown:
      have = (f"its settings are {', '.join(sorted(self.options))}" if self.options else "it has no settings")
      raise MmjaxError(f"config key {where}.{unknown[0]}: objective {name or '?'!r} has no setting "
                       f"{unknown[0]!r}; {have}")
    return self.build(**{**self.options, **settings})


def configurable(factory: Callable[..., Objective], **settings) -> Objective:
  """`factory(**settings)` with `options` = every keyword of `factory` at its value here (its signature's defaults
  for those not given), so `with_options` (config.objective_kwargs) rebuilds it with other settings: the
  objective's hyperparameters live with the objective, not in the model's config."""
  options = {name: p.default for name, p in inspect.signature(factory).parameters.items()}
  options.update(settings)
  return dataclasses.replace(factory(**options), options=FrozenDict(options),
                             build=lambda **new: configurable(factory, **new))


def get_objective(name: str) -> Objective:
  """A registered objective by name; `mmjax.objectives.get_objective` also builds composites ("a+b")."""
  return OBJECTIVES.get(name, "objective")
