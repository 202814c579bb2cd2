"""BERT-style masked language modeling (Devlin et al. 2019) of the shapes captions with a bidirectional text
transformer: 15 % of the non-special tokens selected, 80/10/10 mask/random/keep.

  python -m mmjax.main --config experiments/mlm_shapes.py --workdir runs/mlm_shapes
  python -m mmjax.main --config experiments/mlm_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)

Eval "masked": held-out loss and masked-token accuracy on the test captions (fixed masks). About a minute on CPU.
"""
import ml_collections

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.objective = "mlm"
  c.total_steps = 300
  c.batch_size = 128
  c.log_every = 50
  c.checkpoint_every = 300
  c.optim.lr = 1e-3
  c.optim.b1, c.optim.b2 = 0.9, 0.98
  c.optim.weight_decay = 0.01
  c.optim.warmup_steps = 30
  c.data.context_length = 20
  c.model = ml_collections.ConfigDict(dict(
      name="mlm", text=dict(vocab_size=512, context_length=20, width=128, depth=2, num_heads=4, mlp_ratio=4.0)))
  c.evals.names = "masked"
  c.evals.num_examples = 1000
  c.evals.batch_size = 250
  if arg.runlocal:
    config_lib.runlocal(c)
    c.model.text = dict(vocab_size=512, context_length=20, width=32, depth=1, num_heads=2, mlp_ratio=2.0)
  return c
