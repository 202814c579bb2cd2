"""Fine-tune an OpenCLIP model (both towers, from a checkpoint) on Flickr8k with the CLIP loss, at a low learning
rate (1e-5, as open_clip fine-tuning recipes use, short warmup, cosine), evaluated as experiments/openclip_eval.py.

  python -m mmjax.main --config experiments/finetune_flickr8k.py --workdir runs/ft_b32 \
      --config.model.init_from=ViT-B-32.safetensors

Every parameter is loaded (model.init_from_keys = ""): the model config must be the checkpoint's architecture
(`:preset=ViT-B-16` for others); the temperature is loaded too and stays clamped to [0, log 100] (optim.clamp).
"""
import os

from mmjax import config as config_lib

INIT_FROM_OPEN_CLIP = True   # tests/test_experiments.py writes a random-weight OpenCLIP file for model.init_from
_EVAL = config_lib.load_experiment_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "openclip_eval.py"))


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, preset="ViT-B-32")
  c = _EVAL.get_config(f"preset={arg.preset}" + (",runlocal" if arg.runlocal else ""))
  c.total_steps = 1000
  c.batch_size = 128
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 500
  c.data.crop_scale = (0.8, 1.0)
  c.optim.lr = 1e-5
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.1
  c.model.init_from_keys = ""
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 24
    c.evals.num_examples = 6
  return c
