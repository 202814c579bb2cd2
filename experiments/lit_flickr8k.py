"""LiT (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning") on Flickr8k: the image tower
of an OpenCLIP checkpoint (or an mmjax workdir), locked; a fresh text tower trained against it with the CLIP loss.

  python -m mmjax.main --config experiments/lit_flickr8k.py --workdir runs/lit_b32 \
      --config.model.init_from=ViT-B-32.safetensors

model.init_from_keys = "^vision/" loads the image tower only (the placement table at start says which parameter
is loaded and which fresh); optim.frozen = "^vision/" gives it no update and no optimizer state. The text tower,
logit_scale included, starts fresh: CLIP's tokenizer (so any OpenCLIP text tower could be swapped in later) but a
smaller tower than OpenCLIP's. Evaluated as experiments/openclip_eval.py (Flickr8k retrieval, zero-shot CIFAR-10).
"""
import os

from mmjax import config as config_lib

INIT_FROM_OPEN_CLIP = True   # tests/test_experiments.py writes a random-weight OpenCLIP file for model.init_from
_EVAL = config_lib.load_experiment_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "openclip_eval.py"))


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, preset="ViT-B-32")
  c = _EVAL.get_config(f"preset={arg.preset}" + (",runlocal" if arg.runlocal else ""))
  c.total_steps = 1500
  c.batch_size = 128
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 500
  c.data.crop_scale = (0.8, 1.0)
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.2
  c.model.init_from_keys = "^vision/"
  c.optim.frozen = "^vision/"
  c.model.logit_scale_init = 2.659260036932778          # log(1/0.07): a fresh temperature, as the fresh text tower
  text = dict(c.model.text)
  c.model.text = dict(text, width=256, depth=4, num_heads=4) if not arg.runlocal else text
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 24
    c.evals.num_examples = 6
  return c
