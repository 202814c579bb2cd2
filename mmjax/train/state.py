"""The train state: a pure pytree carried through the jitted step."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed whole.

  step: int32 scalar, number of optimizer updates done.
  params: the model's parameter tree (`variables["params"]`).
  opt_state: the optax state.
  rng: raw uint32[2] key; the step's key is `fold_in(rng, step)`, so resuming at step s reproduces the run.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
