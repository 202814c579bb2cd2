"""FLIP (Li et al. 2023) on the embedded shapes data: CLIP with half of the image patches dropped per sample in
training (model.vision.patch_dropout = 0.5; never at eval), so the image tower sees 1 + 32 of its 65 tokens.

  python -m mmjax.main --config experiments/flip_shapes.py --workdir runs/flip_shapes
  python -m mmjax.main --config experiments/flip_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)
"""
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)
  c.model.vision.patch_dropout = 0.5
  return c
