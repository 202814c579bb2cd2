"""ShapesWorld (mmjax/rl/envs/shapes_world.py): determinism, vmap over 1,024 environments, episode ends, and the
reward rules on hand-built states, checked against rules written out here (not against the env's own output)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.shapes import COLOURS
from mmjax.rl.envs.shapes_world import (BACKGROUND, WALL, ShapesWorld, State, WorldConfig, decode, encode)

CFG = WorldConfig()            # 5x5 grid, 4 colours x 4 shapes, 3 distractors, 12 steps, egocentric
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


@pytest.fixture(scope="module")
def env():
  return ShapesWorld(CFG)


@pytest.fixture(scope="module")
def jstep(env):
  return jax.jit(env.step)


def _state(agent, objs, t=0, colours=(0, 0, 1, 2), shapes=(1, 2, 1, 1)):
  n = len(objs)
  return State(agent=jnp.asarray(agent, jnp.int32), obj_pos=jnp.asarray(objs, jnp.int32),
               obj_colour=jnp.asarray(colours[:n], jnp.int32), obj_shape=jnp.asarray(shapes[:n], jnp.int32),
               tokens=jnp.asarray(encode("go to the red square", CFG.context_length)), t=jnp.asarray(t, jnp.int32))


def test_reset_and_step_are_deterministic_given_the_key(env):
  reset, step = jax.jit(env.reset), jax.jit(env.step_autoreset)
  a, b, c = reset(jax.random.PRNGKey(3)), reset(jax.random.PRNGKey(3)), reset(jax.random.PRNGKey(4))
  chex.assert_trees_all_equal(a, b)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a[1]), jax.tree.leaves(c[1])))
  runs = []
  for _ in range(2):
    obs, state = reset(jax.random.PRNGKey(7))
    key, out = jax.random.PRNGKey(8), []
    for t in range(20):
      key, k1, k2 = jax.random.split(key, 3)
      obs, state, reward, done, _ = step(k1, state, jax.random.randint(k2, (), 0, 4))
      out.append((obs, reward, done))
    runs.append(out)
  chex.assert_trees_all_equal(runs[0], runs[1])


def test_vmap_over_1024_envs_and_scene_rules(env):
  n = 1024
  obs, state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), n))
  chex.assert_shape(obs["image"], (n, 54, 54, 3))
  chex.assert_shape(obs["tokens"], (n, CFG.context_length))
  assert obs["image"].dtype == jnp.uint8
  step = jax.jit(jax.vmap(env.step_autoreset))
  obs2, state2, reward, done, info = step(jax.random.split(jax.random.PRNGKey(1), n), state,
                                          jax.random.randint(jax.random.PRNGKey(2), (n,), 0, 4))
  chex.assert_shape([reward, done, info["success"]], [(n,)] * 3)
  s = jax.device_get(state)
  pos = np.concatenate([s.agent[:, None], s.obj_pos], axis=1)             # [n, 5, 2]: all on distinct cells
  flat = pos[..., 0] * CFG.grid + pos[..., 1]
  assert all(len(set(row)) == 5 for row in flat)
  same_colour = s.obj_colour[:, 1:] == s.obj_colour[:, :1]
  same_shape = s.obj_shape[:, 1:] == s.obj_shape[:, :1]
  assert np.all(same_colour != same_shape)        # every distractor shares exactly one attribute with the target
  held = {(CFG.colours.index(c), CFG.shapes.index(sh)) for c, sh in CFG.held_out}
  targets = set(zip(s.obj_colour[:, 0].tolist(), s.obj_shape[:, 0].tolist()))
  assert targets and not targets & held and len(targets) == 16 - len(held)
  shown = set(zip(s.obj_colour.ravel().tolist(), s.obj_shape.ravel().tolist()))
  assert not shown & held and len(shown) == 16 - len(held)   # held-out pairs never appear in training at all
  for i in range(0, n, 97):                          # the instruction names object 0
    assert decode(s.tokens[i]) == f"go to the {CFG.colours[s.obj_colour[i, 0]]} {CFG.shapes[s.obj_shape[i, 0]]}"
  _, hs = jax.vmap(ShapesWorld(CFG, "held_out").reset)(jax.random.split(jax.random.PRNGKey(5), 256))
  assert set(zip(np.asarray(hs.obj_colour[:, 0]).tolist(), np.asarray(hs.obj_shape[:, 0]).tolist())) == held


def test_episodes_end_within_max_steps(env):
  n = 256
  _, state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(11), n))
  step = jax.jit(jax.vmap(env.step))
  ended = np.zeros(n, bool)
  key = jax.random.PRNGKey(12)
  for t in range(CFG.max_steps):
    key, k = jax.random.split(key)
    _, state, reward, done, info = step(jax.random.split(k, n), state, jax.random.randint(k, (n,), 0, 4))
    ended |= np.asarray(done)
    assert np.all(np.asarray(state.t) == t + 1)
  assert ended.all()
  assert np.all(np.asarray(done) | ended)


@pytest.mark.parametrize("agent, objs, action, t, want_pos, want_reward, want_done, want_success", [
    ((2, 2), [(2, 3), (1, 2)], RIGHT, 0, (2, 3), 1.0 - 0.01, True, True),     # onto the target
    ((2, 2), [(2, 3), (1, 2)], UP, 0, (1, 2), -0.01, True, False),            # onto a distractor: episode over
    ((2, 2), [(2, 3), (1, 2)], LEFT, 0, (2, 1), -0.01, False, False),         # empty cell
    ((2, 2), [(2, 3), (1, 2)], DOWN, 0, (3, 2), -0.01, False, False),
    ((0, 0), [(4, 4), (3, 3)], UP, 0, (0, 0), -0.01, False, False),           # wall: stays
    ((0, 0), [(4, 4), (3, 3)], LEFT, 0, (0, 0), -0.01, False, False),
    ((4, 4), [(0, 0), (3, 3)], DOWN, 3, (4, 4), -0.01, False, False),
    ((2, 2), [(0, 0), (4, 4)], LEFT, CFG.max_steps - 1, (2, 1), -0.01, True, False),   # time-out
    ((2, 2), [(2, 1), (4, 4)], LEFT, CFG.max_steps - 1, (2, 1), 1.0 - 0.01, True, True),  # success on the last step
])
def test_reward_rules_on_hand_built_states(jstep, agent, objs, action, t, want_pos, want_reward, want_done,
                                           want_success):
  obs, state, reward, done, info = jstep(jax.random.PRNGKey(0), _state(agent, objs, t), action)
  assert tuple(np.asarray(state.agent)) == want_pos
  np.testing.assert_allclose(float(reward), want_reward, rtol=1e-6)
  assert bool(done) == want_done and bool(info["success"]) == want_success
  assert int(state.t) == t + 1


def test_render_egocentric_pixels(env):
  p, g = CFG.cell_px, CFG.grid
  state = _state((0, 4), [(1, 4), (0, 0)], colours=(0, 2), shapes=(1, 0))   # red square below, blue circle far left
  img = np.asarray(jax.jit(env.render)(state)).astype(np.float32) / 255
  centre = img[(g - 1) * p:g * p, (g - 1) * p:g * p]
  border = np.concatenate([centre[0], centre[-1], centre[:, 0], centre[:, -1]])
  np.testing.assert_allclose(border, 0.6, atol=1 / 255)                      # the agent's grey frame
  np.testing.assert_allclose(centre[2:-2, 2:-2], BACKGROUND, atol=1 / 255)
  np.testing.assert_allclose(img[:p, :p], WALL, atol=1 / 255)                # above-left of the world: wall
  below = img[g * p:(g + 1) * p, (g - 1) * p:g * p]                          # the cell under the agent
  inside = below[p // 2 - 1:p // 2 + 1, p // 2 - 1:p // 2 + 1].reshape(-1, 3)
  np.testing.assert_allclose(inside, np.broadcast_to(COLOURS["red"], inside.shape), atol=0.05)
  far = img[(g - 1) * p:g * p, (g - 1 - 4) * p:(g - 4) * p][p // 2, p // 2]    # four cells to the left
  np.testing.assert_allclose(far, COLOURS["blue"], atol=0.05)


def test_encode_decode():
  ids = encode("go to the blue star", 8)
  assert ids.tolist()[5:] == [0, 0, 0] and decode(ids) == "go to the blue star"
  assert len(set(ids[:5].tolist())) == 5
