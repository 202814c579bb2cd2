"""ShapesWorld: a pure-JAX grid world of coloured shapes with language instructions (gymnax / PureJaxRL style).

The world is a `grid x grid` board of cells; each episode places the agent and `1 + num_distractors` objects on
distinct cells. Object 0 is the target, named by the instruction "go to the <colour> <shape>"; every distractor
shares exactly one attribute (colour or shape) with the target, so neither attribute alone identifies it and the
task needs the full instruction (an agent without it succeeds at about 1 / (1 + num_distractors) at best).
Actions: 0 up, 1 down, 2 left, 3 right (moves into a wall leave the agent in place). Stepping onto an object ends
the episode: reward `success_reward` if it is the target, else 0 (a failure); every step also costs
`step_penalty`; the episode is cut after `max_steps` steps (a failure).

Observations: `image` uint8 [H, W, 3] with H = W = grid * cell_px, or with `egocentric` (the default, as
BabyAI / MiniGrid) H = W = (2 grid - 1) * cell_px: the whole world seen from the agent, which is always at the
centre cell, outside the world drawn as wall (sprites of the shapes data's renderer and
colours, `mmjax.data.shapes._sdf` / `COLOURS`, pre-rendered once with NumPy and placed with a scatter), and
`tokens` int32 [L] (word ids of `WORDS`, padded with 0 = "<pad>").

Compositional split: `held_out` colour-shape pairs never appear in a "train" episode (with
`held_out_as_distractors` they may appear as distractors, never as targets: an agent then learns to avoid them,
which defeats the test); "held_out" episodes take their target only from them.

API (all pure, jittable and vmap-able): `env.reset(key) -> (obs, state)`,
`env.step(key, state, action) -> (obs, state, reward, done, info)`, `env.step_autoreset(...)` (same, but a done
episode is replaced by a fresh one, whose first observation is returned), `env.render(state) -> uint8 [H, W, 3]`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import einops
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.shapes import COLOURS, SHAPES, _sdf
from mmjax.errors import MmjaxError

WORDS = ("<pad>", "go", "to", "the", "pick", "up", "then") + tuple(COLOURS) + SHAPES
WORD_IDS = {w: i for i, w in enumerate(WORDS)}
PAD = 0
MOVES = np.asarray([(-1, 0), (1, 0), (0, -1), (0, 1)], np.int32)   # (row, col) deltas of actions 0..3
NUM_ACTIONS = 4
BACKGROUND = 0.08
WALL = 0.3


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  grid: int = 5
  cell_px: int = 6
  colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
  shapes: tuple[str, ...] = ("circle", "square", "triangle", "star")
  num_distractors: int = 3
  max_steps: int = 12
  context_length: int = 8
  step_penalty: float = 0.01
  success_reward: float = 1.0
  held_out: tuple[tuple[str, str], ...] = (("red", "square"), ("green", "triangle"), ("blue", "star"),
                                           ("yellow", "circle"))
  held_out_as_distractors: bool = False
  egocentric: bool = True

  def __post_init__(self):
    for c in self.colours:
      if c not in COLOURS:
        raise MmjaxError(f"config key env.colours: unknown colour {c!r}; use some of {', '.join(COLOURS)}")
    for s in self.shapes:
      if s not in SHAPES:
        raise MmjaxError(f"config key env.shapes: unknown shape {s!r}; use some of {', '.join(SHAPES)}")
    if len(self.colours) < 2 or len(self.shapes) < 2:
      raise MmjaxError("config keys env.colours / env.shapes need at least 2 entries each")
    for pair in self.held_out:
      if pair[0] not in self.colours or pair[1] not in self.shapes:
        raise MmjaxError(f"config key env.held_out: pair {pair} uses a colour/shape not in env.colours/env.shapes")
    if not 2 + self.num_distractors <= self.grid * self.grid:
      raise MmjaxError(f"config key env.num_distractors={self.num_distractors} does not fit a {self.grid}x"
                       f"{self.grid} grid")
    if self.context_length < 5:
      raise MmjaxError(f"config key env.context_length={self.context_length} must be >= 5")


def config_from(env_cfg) -> WorldConfig:
  """A WorldConfig from the `env` section of a run config: colours/shapes "red,green", held_out "red:square,..."."""
  d = dict(env_cfg)
  for k in ("colours", "shapes"):
    if isinstance(d.get(k), str):
      d[k] = tuple(x.strip() for x in d[k].split(",") if x.strip())
  if isinstance(d.get("held_out"), str):
    d["held_out"] = tuple(tuple(p.strip().split(":")) for p in d["held_out"].split(",") if p.strip())
  valid = {f.name for f in dataclasses.fields(WorldConfig)}
  for k in d:
    if k not in valid:
      raise MmjaxError(f"unknown config key 'env.{k}' (valid: {', '.join(sorted(valid))})")
  return WorldConfig(**d)


def instruction(colour: str, shape: str) -> str:
  return f"go to the {colour} {shape}"


def encode(text: str, context_length: int) -> np.ndarray:
  """Word ids of `text` (lower-case, space-separated words of WORDS), padded with 0 to [context_length]."""
  words = text.lower().split()
  if len(words) > context_length or any(w not in WORD_IDS for w in words):
    raise MmjaxError(f"cannot encode instruction {text!r} in {context_length} words of the ShapesWorld vocabulary")
  out = np.zeros(context_length, np.int32)
  out[:len(words)] = [WORD_IDS[w] for w in words]
  return out


def decode(tokens) -> str:
  return " ".join(WORDS[int(t)] for t in np.asarray(tokens) if int(t) != PAD)


def render_sprites(cfg: WorldConfig) -> np.ndarray:
  """[num_colours, num_shapes, P, P, 3] float32 sprites on the background, drawn with the shapes data's SDFs."""
  p = cfg.cell_px
  grid = np.arange(p, dtype=np.float32) + 0.5 - p / 2
  u, v = grid[None, :], grid[:, None]
  out = np.zeros((len(cfg.colours), len(cfg.shapes), p, p, 3), np.float32)
  for j, s in enumerate(cfg.shapes):
    # 4x4 supersampling keeps 5-6 px sprites legible
    sub = (np.arange(4, dtype=np.float32) + 0.5) / 4 - 0.5
    cover = np.mean([np.clip(0.5 - _sdf(SHAPES.index(s), u + a, v + b, 0.46 * p), 0, 1) for a in sub for b in sub],
                    axis=0)[..., None]
    for i, c in enumerate(cfg.colours):
      out[i, j] = BACKGROUND + cover * (np.asarray(COLOURS[c], np.float32) - BACKGROUND)
  return out


def agent_sprite(cfg: WorldConfig) -> np.ndarray:
  """The agent: a grey hollow square filling its cell, [P, P, 3] (no object looks like it)."""
  p = cfg.cell_px
  img = np.full((p, p, 3), BACKGROUND, np.float32)
  img[[0, -1], :], img[:, [0, -1]] = 0.6, 0.6
  return img


@flax.struct.dataclass
class State:
  agent: jax.Array         # int32 [2] (row, col)
  obj_pos: jax.Array       # int32 [N, 2]; object 0 is the target
  obj_colour: jax.Array    # int32 [N] index into cfg.colours
  obj_shape: jax.Array     # int32 [N] index into cfg.shapes
  tokens: jax.Array        # int32 [L]
  t: jax.Array             # int32 [] steps taken


class ShapesWorld:
  """The environment for one split ("train" or "held_out") of a WorldConfig; methods are pure functions."""

  def __init__(self, cfg: WorldConfig, split: str = "train"):
    if split not in ("train", "held_out"):
      raise MmjaxError(f"unknown ShapesWorld split {split!r}; use 'train' or 'held_out'")
    self.cfg, self.split = cfg, split
    nc, ns = len(cfg.colours), len(cfg.shapes)
    held = {(cfg.colours.index(c), cfg.shapes.index(s)) for c, s in cfg.held_out}
    pairs = [(c, s) for c in range(nc) for s in range(ns)]
    targets = [p for p in pairs if (p in held) == (split == "held_out")]
    if not targets:
      raise MmjaxError(f"ShapesWorld split {split!r} has no target pairs; check config key env.held_out")
    allowed = [p for p in pairs if cfg.held_out_as_distractors or split == "held_out" or p not in held]
    table = []
    for tc, ts in targets:   # distractors: share exactly one attribute with the target
      table.append([p for p in allowed if (p[0] == tc) != (p[1] == ts)])
    width = max(len(r) for r in table)
    if min(len(r) for r in table) == 0:
      raise MmjaxError("ShapesWorld: a target has no possible distractor; use more colours/shapes")
    self.targets = jnp.asarray(targets, jnp.int32)                                       # [K, 2]
    self.distractors = jnp.asarray([r + r[:1] * (width - len(r)) for r in table], jnp.int32)  # [K, W, 2]
    self.num_distractor_choices = jnp.asarray([len(r) for r in table], jnp.int32)        # [K]
    self.instructions = jnp.asarray(np.stack([encode(instruction(cfg.colours[c], cfg.shapes[s]),
                                                     cfg.context_length) for c, s in targets]))
    self.sprites = jnp.asarray(render_sprites(cfg))
    self.agent_img = jnp.asarray(agent_sprite(cfg))
    side = (2 * cfg.grid - 1 if cfg.egocentric else cfg.grid) * cfg.cell_px
    self.image_shape = (side, side, 3)
    self.num_objects = 1 + cfg.num_distractors

  # ------------------------------------------------------------------ core
  def sample_state(self, key: jax.Array) -> State:
    cfg, n = self.cfg, self.num_objects
    k_target, k_kind, k_pos = jax.random.split(key, 3)
    t = jax.random.randint(k_target, (), 0, self.targets.shape[0])
    pick = jax.random.randint(k_kind, (n - 1,), 0, self.num_distractor_choices[t])
    objs = jnp.concatenate([self.targets[t][None], self.distractors[t][pick]], axis=0)        # [N, 2]
    cells = jax.random.permutation(k_pos, cfg.grid * cfg.grid)[:n + 1]
    pos = jnp.stack([cells // cfg.grid, cells % cfg.grid], axis=-1).astype(jnp.int32)
    return State(agent=pos[0], obj_pos=pos[1:], obj_colour=objs[:, 0], obj_shape=objs[:, 1],
                 tokens=self.instructions[t], t=jnp.zeros((), jnp.int32))

  def render(self, state: State) -> jax.Array:
    cfg = self.cfg
    cells = jnp.full((cfg.grid, cfg.grid, cfg.cell_px, cfg.cell_px, 3), BACKGROUND, jnp.float32)
    cells = cells.at[state.obj_pos[:, 0], state.obj_pos[:, 1]].set(self.sprites[state.obj_colour, state.obj_shape])
    cells = cells.at[state.agent[0], state.agent[1]].set(self.agent_img)
    if cfg.egocentric:   # a (2G-1)^2-cell window centred on the agent; outside the world is wall
      pad = cfg.grid - 1
      cells = jnp.pad(cells, ((pad, pad), (pad, pad), (0, 0), (0, 0), (0, 0)), constant_values=WALL)
      cells = jax.lax.dynamic_slice(cells, (state.agent[0], state.agent[1], 0, 0, 0),
                                    (2 * pad + 1, 2 * pad + 1) + cells.shape[2:])
    img = einops.rearrange(cells, "gy gx py px c -> (gy py) (gx px) c")
    return jnp.round(img * 255.0).astype(jnp.uint8)

  def observe(self, state: State) -> dict[str, jax.Array]:
    return {"image": self.render(state), "tokens": state.tokens}

  def reset(self, key: jax.Array) -> tuple[dict[str, jax.Array], State]:
    state = self.sample_state(key)
    return self.observe(state), state

  def transition(self, state: State, action: jax.Array) -> tuple[State, jax.Array, jax.Array, dict[str, Any]]:
    """(next state, reward, done, info) of `action` in `state`: the rules, without rendering."""
    cfg = self.cfg
    agent = jnp.clip(state.agent + jnp.asarray(MOVES)[action], 0, cfg.grid - 1)
    on = jnp.all(state.obj_pos == agent[None], axis=-1)               # [N]
    touched = jnp.any(on)
    success = on[0]
    t = state.t + 1
    done = touched | (t >= cfg.max_steps)
    reward = cfg.success_reward * success.astype(jnp.float32) - cfg.step_penalty
    info = {"success": success, "touched_wrong": touched & ~success, "timeout": done & ~touched, "length": t}
    return state.replace(agent=agent, t=t), reward, done, info

  def step(self, key: jax.Array, state: State, action: jax.Array):
    del key  # the dynamics are deterministic; the key keeps the gymnax signature
    state, reward, done, info = self.transition(state, action)
    return self.observe(state), state, reward, done, info

  def step_autoreset(self, key: jax.Array, state: State, action: jax.Array):
    """`step`, then a done episode is replaced by `reset(key)`: returns the new episode's first observation."""
    state, reward, done, info = self.transition(state, action)
    fresh = self.sample_state(key)
    state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, state)
    return self.observe(state), state, reward, done, info
