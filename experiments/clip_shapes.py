"""CLIP (Radford et al. 2021) on the embedded shapes data: the demo and the main job.

  python -m mmjax.main --config experiments/clip_shapes.py --workdir runs/clip_shapes
  python -m mmjax.main --config experiments/clip_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)

Finishes in a few minutes on 2 CPU cores; prints zero-shot accuracy (shape, colour, shape+colour) and retrieval R@K.
"""
from mmjax import config as config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.objective = "clip"
  c.total_steps = 700
  c.batch_size = 128
  c.log_every = 25
  c.checkpoint_every = 350
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 30
  c.optim.weight_decay = 0.1
  c.data.image_size = 64
  c.data.context_length = 20
  c.model.embed_dim = 128
  c.model.vision = dict(image_size=64, patch_size=8, width=128, depth=2, num_heads=4, mlp_ratio=4.0, pool="cls")
  c.model.text = dict(vocab_size=512, context_length=20, width=128, depth=1, num_heads=4, mlp_ratio=4.0)
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.image_size = 32
    c.model.embed_dim = 32
    c.model.vision = dict(image_size=32, patch_size=8, width=32, depth=1, num_heads=2, mlp_ratio=2.0, pool="cls")
    c.model.text = dict(vocab_size=512, context_length=20, width=32, depth=1, num_heads=2, mlp_ratio=2.0)
  return c
