"""CLIP + masked language modeling (BERT, Devlin et al. 2019) on the embedded shapes data: the text tower is
bidirectional (model.text.causal = False, pooled at the EOT) and also feeds an MLM head (objective "clip+mlm").

  python -m mmjax.main --config experiments/clip_mlm_shapes.py --workdir runs/clip_mlm_shapes
  python -m mmjax.main --config experiments/clip_mlm_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)
"""
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)
  c.objective = "clip+mlm"
  c.objective_weights = {"clip": 1.0, "mlm": 0.5}
  c.model.name = "multitask_clip"
  c.model.text.causal = False
  c.model.heads = {"mlm": {}}
  return c
