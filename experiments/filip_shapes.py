"""FILIP (Yao et al. 2021) on the embedded shapes data: clip_shapes.py's model and schedule with the token-wise
late-interaction loss between patches and words (objective "filip"); the image tower pools by the mean of its patch
tokens, so the "clip" evaluations (zero-shot + retrieval on the pooled embeddings) use the FILIP-trained features.

  python -m mmjax.main --config experiments/filip_shapes.py --workdir runs/filip_shapes
"""
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)
  c.objective = "filip"
  c.model.vision.pool = "gap"   # the pooled image embedding (evaluations) = the mean of FILIP's patch features
  return c
