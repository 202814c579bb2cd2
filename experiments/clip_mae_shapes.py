"""CLIP + MAE (He et al. 2022) on the embedded shapes data: the image tower, run on a random 25 % of the patches,
also feeds a small MAE decoder reconstructing the masked ones (objective "clip+mae"; mmjax.models.multitask).

  python -m mmjax.main --config experiments/clip_mae_shapes.py --workdir runs/clip_mae_shapes
  python -m mmjax.main --config experiments/clip_mae_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)
"""
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)
  c.objective = "clip+mae"
  c.objective_weights = {"clip": 1.0, "mae": 1.0}
  c.model.name = "multitask_clip"
  width = 32 if config_lib.parse_arg(arg).runlocal else 64
  c.model.heads = {"mae": {"width": width, "depth": 1, "num_heads": 2, "mask_ratio": 0.75}}
  return c
