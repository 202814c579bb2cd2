"""Embodied language grounding with PPO in ShapesWorld (issue 13): "go to the <colour> <shape>" among 3
distractors that share the colour or the shape with the target; 4 of the 16 colour-shape pairs are held out.

  python -m mmjax.main --config experiments/rl_shapes_world.py --workdir runs/rl_shapes_world
  python -m mmjax.main --config experiments/rl_shapes_world.py:blind --workdir runs/rl_shapes_world_blind
  python -m mmjax.main --config experiments/rl_shapes_world.py --workdir runs/rl_shapes_world --mode eval
  python -m mmjax.main --config experiments/rl_shapes_world.py:runlocal --workdir /tmp/x     (seconds; tests)

Arguments: `blind` trains the language-free baseline (the instruction is replaced by padding); `fusion=gmu` etc.
picks another mmjax.fusion module (default FiLM); `steps=N` the number of PPO updates.
"""
from mmjax import config as config_lib
from mmjax.rl.config import rl_config


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, blind=False, fusion="film", steps=0)
  c = rl_config()
  c.total_steps = 360
  c.log_every = 10
  c.checkpoint_every = 120
  c.mask_instruction = arg.blind
  c.env.grid, c.env.cell_px, c.env.num_distractors, c.env.max_steps = 5, 4, 3, 12
  c.model.fusion = arg.fusion
  c.model.channels, c.model.text_width, c.model.hidden = 16, 32, 64
  c.ppo.num_envs, c.ppo.num_steps, c.ppo.num_epochs, c.ppo.num_minibatches = 64, 16, 2, 8
  c.ppo.lr = 2e-3
  c.evals.num_episodes = 1000
  if arg.steps:
    c.total_steps = arg.steps
  if arg.runlocal:
    c.total_steps, c.log_every, c.checkpoint_every, c.progress_bar = 2, 1, 2, False
    c.ppo.num_envs, c.ppo.num_steps, c.ppo.num_epochs, c.ppo.num_minibatches = 8, 4, 1, 2
    c.model.channels, c.model.text_width, c.model.hidden = 4, 8, 16
    c.evals.num_episodes = 16
  return c
