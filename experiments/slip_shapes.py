"""SLIP (Mu et al. 2022) on the embedded shapes data: CLIP + SimCLR between two on-device augmented views of each
image (random resized crop, flip; mmjax.objectives.simclr), sharing the image tower. objective "clip+simclr".

  python -m mmjax.main --config experiments/slip_shapes.py --workdir runs/slip_shapes
  python -m mmjax.main --config experiments/slip_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)
"""
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)
  c.objective = "clip+simclr"
  c.objective_weights = {"clip": 1.0, "simclr": 1.0}      # SLIP's ssl_scale = 1
  c.model.name = "multitask_clip"
  small = config_lib.parse_arg(arg).runlocal
  c.model.heads = {"simclr": {"hidden": 32 if small else 256, "dim": 16 if small else 64}}
  return c
